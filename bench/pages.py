"""Server time of the main pages and list endpoints with a large record, against the same pages with
a small one, measured in one run.

    python bench/pages.py [--events 1000000 --issues 100000] [--small-events 1000 --small-issues 100]

Each size gets its own scratch SQLite database (events with genuine keyed hashes, issues half open,
a repair per ten issues, metric samples); every page is requested in-process through Django's test
client, median of 7 after a warm-up. Goal: large within 1.5x of small.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build(var: str, events: int, issues: int) -> None:
    from bench.audit_verify import build as build_events
    from bench.audit_verify import setup

    setup(var)
    build_events(events)
    from datetime import timedelta

    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from healing.models import CacheTarget, Issue, MetricSample, Repair

    now = timezone.now()
    targets = [CacheTarget.objects.create(name=f"cache-{i}", location=f"/srv/cache-{i}", labels=["prod"], last_check_at=now) for i in range(10)]
    codes = ["fs.entry_corrupt", "fs.index_stale", "fs.index_orphan", "ai.poisoned_response", "fs.entry_expired"]
    severities = ["high", "low", "low", "high", "low"]
    batch = []
    for i in range(issues):
        t = targets[i % 10]
        batch.append(Issue(target=t, code=codes[i % 5], severity=severities[i % 5], title="x", fingerprint=f"fp-{i}", subject_count=1 + i % 7,
                           sample=[{"subject": f"{i:064x}.json", "mtime": now.timestamp() - 600}], first_seen_at=now - timedelta(minutes=i % 10000),
                           # as the product keeps them: one live issue per target and check, the rest history
                           last_seen_at=now - timedelta(seconds=i % 3600), status="open" if i >= issues - 50 else "resolved",
                           resolved_at=None if i >= issues - 50 else now - timedelta(minutes=i % 40000)))
        if len(batch) == 5000:
            Issue.objects.bulk_create(batch)
            batch = []
    Issue.objects.bulk_create(batch)
    first = Issue.objects.order_by("pk").first()
    Repair.objects.bulk_create([Repair(target=targets[i % 10], issue=first, code="fs.index_stale", action="index_resync", risk="medium",
                                       status=["awaiting_approval", "succeeded", "rolled_back"][i % 3],
                                       plan={"operations": [{"op": "index_update", "subject": f"{i:064x}.json", "key": f"{i:064x}"}]}, plan_hash="h",
                                       created_at=now - timedelta(minutes=(i * 7) % 43200)) for i in range(max(100, issues // 10))], batch_size=5000)
    MetricSample.objects.bulk_create([MetricSample(target=t, name=n, value=float(k), at=now - timedelta(minutes=5 * k))
                                      for t in targets for n in ("entries", "bytes", "read_latency_ms", "health_score", "issues_opened", "issues_resolved")
                                      for k in range(288)], batch_size=5000)
    get_user_model().objects.create_superuser("bench", "", "pw")


PAGES = ["/", "/targets/cache-3/", "/issues/{issue}/", "/approvals/", "/audit/", "/audit/?target=cache-3", "/repairs/{repair}/",
         "/api/issues/?status=open", "/api/repairs/", "/api/targets/", "/compliance/"]


def measure(var: str) -> dict[str, float]:
    from bench.audit_verify import setup

    setup(var)
    from django.contrib.auth import get_user_model
    from django.test import Client

    from healing.models import Issue, Repair

    client = Client()
    client.force_login(get_user_model().objects.get(username="bench"))
    issue = Issue.objects.filter(status="open").order_by("-pk").first()
    repair = Repair.objects.order_by("-pk").first()
    out = {}
    for page in PAGES:
        url = page.format(issue=issue.pk, repair=repair.pk)
        client.get(url)
        times = []
        for _ in range(7):
            started = time.perf_counter()
            response = client.get(url)
            times.append(time.perf_counter() - started)
            assert response.status_code == 200, (url, response.status_code)
        out[page] = statistics.median(times)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--issues", type=int, default=100_000)
    parser.add_argument("--small-events", type=int, default=1_000)
    parser.add_argument("--small-issues", type=int, default=100)
    parser.add_argument("--child", nargs=2)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[1])))
        return
    results = {}
    for label, events, issues in (("small", args.small_events, args.small_issues), ("large", args.events, args.issues)):
        var = tempfile.mkdtemp(prefix=f"healing-bench-pages-{label}-")
        env = {**os.environ, "HEALING_VAR_DIR": var, "HEALING_LOG_LEVEL": "WARNING", "HEALING_ALLOWED_HOSTS": "testserver"}
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); import bench.pages as b; b.build({var!r}, {events}, {issues})"],
                       env=env, check=True, cwd=ROOT)
        print(f"built {label}: {events} events, {issues} issues in {time.perf_counter() - started:.0f} s", flush=True)
        out = subprocess.run([sys.executable, __file__, "--child", label, var], env=env, check=True, capture_output=True, text=True, cwd=ROOT).stdout
        results[label] = json.loads(out.strip().splitlines()[-1])
    worst = 0.0
    for page in PAGES:
        small, large = results["small"][page], results["large"][page]
        worst = max(worst, large / small)
        print(f"{page:<28} small {small * 1000:7.1f} ms   large {large * 1000:7.1f} ms   ratio {large / small:5.2f}x")
    print(f"worst ratio {worst:.2f}x (goal <= 1.5x)")


if __name__ == "__main__":
    main()
