"""Audit chain verification against the floor of reading the same rows with a plain query.

    python bench/audit_verify.py [--events 1000000]

Builds a chain of N genuine events (keyed hashes, as the product writes them) in a scratch SQLite
database, then times, in the same run: the floor (a plain query streaming the same rows and columns)
and `chain_verify` (every hash, link and checkpoint). Memory: peak RSS of verification in a fresh
process, at N/10 and at N events, to show it stays flat. Goal: verification within 2x the floor.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def setup(var: str) -> None:
    os.environ["HEALING_VAR_DIR"] = var
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ["HEALING_LOG_LEVEL"] = "WARNING"
    import django

    django.setup()


def build(n: int) -> None:
    from django.core.management import call_command

    from compliance.keys import chain_key
    from compliance.models import AuditEvent, ChainHead
    from compliance.services import checkpoint_take, row_mac

    call_command("migrate", verbosity=0)
    key, prev = chain_key(), "0" * 64
    start = datetime(2026, 1, 1, tzinfo=UTC)
    batch = []
    for seq in range(1, n + 1):
        row = {"seq": seq, "at": start + timedelta(milliseconds=seq), "actor_kind": "system", "actor_id": "checker", "actor_label": "system:checker",
               "actor_version": None, "action": "issue.updated", "object_type": "issue", "object_id": str(seq % 977), "scope": f"target:{seq % 13}",
               "summary": f"fs.index_stale: now {seq % 50} subject(s)", "before": {"status": "open", "subjects": seq % 50},
               "after": {"status": "open", "subjects": seq % 50 + 1, "run": seq}, "request_id": "", "source_ip": "", "forwarded_for": "", "prev_hash": prev}
        row["hash"] = prev = row_mac(key, row)
        batch.append(AuditEvent(**row))
        if len(batch) == 5000:
            AuditEvent.objects.bulk_create(batch)
            batch = []
    if batch:
        AuditEvent.objects.bulk_create(batch)
    ChainHead.objects.update_or_create(pk=1, defaults={"seq": n, "hash": prev})
    checkpoint_take()


def floor() -> float:
    """A plain query reading the same rows and columns, streamed in batches."""
    from django.db import connection

    from compliance.services import EVENT_FIELDS

    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {', '.join(EVENT_FIELDS)} FROM compliance_auditevent ORDER BY seq")
        while cursor.fetchmany(5000):
            pass
    return time.perf_counter() - started


def verify() -> tuple[float, bool, int]:
    from compliance.services import chain_verify

    started = time.perf_counter()
    result = chain_verify()
    return time.perf_counter() - started, result.ok, result.events


def child(var: str) -> None:
    setup(var)
    seconds, ok, events = verify()
    print(f"{seconds} {ok} {events} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--child", default=None)
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    results = {}
    for n in (args.events // 10, args.events):
        var = tempfile.mkdtemp(prefix=f"healing-bench-audit-{n}-")
        env = {**os.environ, "HEALING_VAR_DIR": var}
        started = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--child-build", str(n)] if False else
                       [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); import bench.audit_verify as b; b.setup({var!r}); b.build({n})"],
                       env=env, check=True, cwd=ROOT)
        built = time.perf_counter() - started
        out = subprocess.run([sys.executable, __file__, "--child", var], env=env, check=True, capture_output=True, text=True, cwd=ROOT).stdout.split()
        floor_s = float(subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); import bench.audit_verify as b; b.setup({var!r}); print(b.floor())"],
                                       env=env, check=True, capture_output=True, text=True, cwd=ROOT).stdout.split()[-1])
        results[n] = (float(out[0]), out[1] == "True", int(out[2]), int(out[3]) / 1024, floor_s, built)
    for n, (seconds, ok, events, rss, floor_s, built) in results.items():
        print(f"{n:>9} events (built in {built:.0f} s): floor {floor_s:.2f} s, verify {seconds:.2f} s, ratio {seconds / floor_s:.2f}x (goal <= 2.0x), "
              f"intact={ok} ({events} checked), peak RSS of verification {rss:.0f} MiB")


if __name__ == "__main__":
    main()
