"""A full check of a SQLite LLM cache against SQLite's own `PRAGMA integrity_check`, in one run.

    python bench/sqlite_scan.py [--rows 1000000] [--dir /path/to/scratch]

The cache is an aicache `cache.db` (values msgpack then zlib, as aicache writes them), warm in the page
cache. Floor: `PRAGMA integrity_check` on the same file, best of N. Full check: the sqlite backend's
on-demand check (full integrity_check, every row decoded as aicache reads it, the AI checks on every
prompt and response, duplicates), best of N. Goal on the 2-core machine: full check <= 3x the floor.
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import shutil
import sqlite3
import sys
import tempfile
import time
import zlib
from pathlib import Path

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timing import best  # noqa: E402
from healing.backends.base import TargetConfig  # noqa: E402
from healing.backends.sqlite import SqliteBackend  # noqa: E402
from tests.llm_clients import AICACHE_SCHEMA  # noqa: E402

TOPICS = ["retries", "sharding", "vector indexes", "rate limits", "caching", "streaming", "embeddings", "tokenisers"]


def build(path: Path, rows: int) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(AICACHE_SCHEMA)
    context = zlib.compress(msgpack.packb({"model": "gpt-4o-mini", "temperature": 0.2}, use_bin_type=True), 6)
    now = time.time() - 86400
    batch = []
    for i in range(rows):
        prompt = f"Explain {TOPICS[i % len(TOPICS)]} in case {i}, with an example"
        answer = (f"Here is a careful answer about {TOPICS[i % len(TOPICS)]} for case {i}. It explains the idea, gives an example "
                  f"in code and ends with a caveat about the edge cases that matter in production systems.")
        packed = zlib.compress(msgpack.packb(answer, use_bin_type=True), 6)
        key = hashlib.sha256(prompt.encode()).hexdigest()
        batch.append((key, prompt, packed, context, now + i * 0.01, now + i * 0.01, len(answer), 1.0, 1.0, 0.0))
        if len(batch) == 20000:
            conn.executemany("INSERT INTO cache_entries (cache_key, prompt, response, context, timestamp, last_accessed, response_size, "
                             "compression_ratio, cost_estimate, priority_score) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", batch)
            batch.clear()
    if batch:
        conn.executemany("INSERT INTO cache_entries (cache_key, prompt, response, context, timestamp, last_accessed, response_size, "
                         "compression_ratio, cost_estimate, priority_score) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", batch)
    conn.commit()
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-sqlite-", dir=args.dir))
    try:
        path = scratch / "cache.db"
        started = time.perf_counter()
        build(path, args.rows)
        print(f"built {args.rows:,} rows ({path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - started:.1f} s")

        def floor():
            conn = sqlite3.connect(path)
            try:
                return conn.execute("PRAGMA integrity_check").fetchall()
            finally:
                conn.close()

        floor()  # warm the page cache
        floor_s, verdict = best(floor, args.runs)
        assert verdict == [("ok",)], verdict
        backend = SqliteBackend(TargetConfig(id=0, name="bench", kind="sqlite", location=str(path), full_speed=True,
                                             state_path=scratch / "state.json"))
        full_s, outcome = best(lambda: backend.check(), args.runs)
        assert outcome.reachable and not outcome.findings, [(f.code, f.subject) for f in outcome.findings[:5]]
        assert outcome.stats["entries"] == args.rows
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"floor  PRAGMA integrity_check      {floor_s:7.2f} s")
        print(f"full   check (integrity + rows)    {full_s:7.2f} s   ratio {full_s / floor_s:.2f}x   (goal <= 3.0x)")
        print(f"peak RSS of this process {rss:.0f} MiB")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
