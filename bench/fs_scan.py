"""Scan cost of an aicache file store against the I/O floor, measured in one run.

    python bench/fs_scan.py [--entries 200000] [--dir /path/to/scratch]

Floor: `cat` of every entry file (find | xargs cat > /dev/null), warm cache, best of N.
Full check: the aicache_fs backend's complete check (every entry read and parsed, the index compared,
content scanned for poisoned answers and secrets), no saved state, best of N.
Rescan: after 1% of entries were rewritten the way aicache's get() does (and the index rewritten),
the incremental check (stat-only for the rest), best of N.
Goals on the 2-core machine: full <= 2.0x floor, rescan <= 0.5x floor.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from healing.backends.aicache_fs import AicacheFsBackend  # noqa: E402
from healing.backends.base import TargetConfig  # noqa: E402


def build(root: Path, n: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    now = time.time() - 7200
    index = {}
    for i in range(n):
        prompt = f"Explain topic number {i} with an example and a caveat"
        key = hashlib.sha256(prompt.encode() + json.dumps({"model": "gpt-4o-mini"}, sort_keys=True).encode()).hexdigest()
        value = f"Topic {i}: a complete answer. " * 12
        entry = {"key": key, "value": value, "timestamp": now, "ttl_seconds": None, "access_count": 0, "last_accessed": now}
        path = root / f"{key}.json"
        path.write_text(json.dumps(entry, indent=2))
        os.utime(path, (now, now))
        index[key] = {"created_at": now, "last_accessed": now, "access_count": 0, "prompt_preview": prompt, "response_length": len(value)}
    (root / ".index.json").write_text(json.dumps(index))
    os.chmod(root, 0o700)


def floor_seconds(root: Path) -> float:
    started = time.perf_counter()
    subprocess.run(f"find {root} -maxdepth 1 -name '*.json' -print0 | xargs -0 cat > /dev/null", shell=True, check=True)
    return time.perf_counter() - started


def touch_one_percent(root: Path, names: list[str], rng: random.Random) -> None:
    """What aicache's get() does to an entry: rewrite it compactly with a bumped access count; then the index."""
    index = json.loads((root / ".index.json").read_text())
    for name in rng.sample(names, max(1, len(names) // 100)):
        path = root / name
        entry = json.loads(path.read_text())
        entry["access_count"] += 1
        entry["last_accessed"] = time.time() - 3600
        path.write_text(json.dumps(entry))
        old = time.time() - 3600
        os.utime(path, (old, old))
        index[name[:-5]]["access_count"] = entry["access_count"]
        index[name[:-5]]["last_accessed"] = entry["last_accessed"]
    (root / ".index.json").write_text(json.dumps(index))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    scratch = Path(args.dir or tempfile.mkdtemp(prefix="healing-bench-"))
    root = scratch / f"store-{args.entries}"
    state = scratch / "state.bin"
    if not (root / ".index.json").exists():
        print(f"building a {args.entries}-entry store in {root} ...", flush=True)
        build(root, args.entries)
    names = sorted(p for p in os.listdir(root) if p.endswith(".json") and p != ".index.json")
    config = TargetConfig(id=0, name="bench", kind="aicache_fs", location=str(root), grace_seconds=60, state_path=state,
                          scan_processes=min(2, os.cpu_count() or 1))
    backend = AicacheFsBackend(config)

    # each measurement right after a floor of its own: this machine's speed drifts by 10-20 % over a
    # minute, and a floor taken minutes earlier would put that drift into the ratio
    floors, fulls, findings = [], [], None
    for _ in range(args.repeat):
        for old in state.parent.glob(state.name + "*"):
            old.unlink()
        floors.append(floor_seconds(root))
        started = time.perf_counter()
        outcome = backend.check(incremental=False)
        fulls.append(time.perf_counter() - started)
        findings = len(outcome.findings)
    rng = random.Random(3)
    rescans, read = [], 0
    for _ in range(args.repeat):
        touch_one_percent(root, names, rng)
        floors.append(floor_seconds(root))
        started = time.perf_counter()
        outcome = backend.check(incremental=True)
        rescans.append(time.perf_counter() - started)
        read = outcome.stats["files_read"]
        assert not outcome.findings, outcome.findings[:3]
    floor = min(floors)
    full, rescan = min(fulls), min(rescans)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"entries                 {len(names)}")
    print(f"findings (healthy)      {findings}")
    print(f"floor: cat every entry  {floor:.2f} s")
    print(f"full check              {full:.2f} s   ratio {full / floor:.2f}x floor   (goal <= 2.0x)")
    print(f"rescan after 1% changed {rescan:.2f} s   ratio {rescan / floor:.2f}x floor   (goal <= 0.5x; files read: {read})")
    print(f"peak RSS                {peak_mb:.0f} MiB")
    if not args.dir:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
