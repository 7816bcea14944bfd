"""A full check of a Redis LLM cache against the floor of a pipelined SCAN + TTL pass, in one run.

    python bench/redis_scan.py [--keys 1000000]

Starts its own redis-server on loopback (Debian's package), loads LangChain RedisCache entries (the
exact hash layout LangChain's update() writes, with a TTL), then times, best of N:
- floor: SCAN COUNT 1000 over the keyspace, a pipelined TTL for every key of each batch (Python, redis-py);
- full check: the redis backend's on-demand check (every key's TTL and value read, decoded as LangChain
  reads it, the AI checks, server health), at full speed.
Goal on the 2-core machine: full check <= 1.5x the floor.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timing import best  # noqa: E402
from healing.backends.base import TargetConfig  # noqa: E402
from healing.backends.redis import RedisBackend  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

TOPICS = ["retries", "sharding", "vector indexes", "rate limits", "caching", "streaming", "embeddings", "tokenisers"]


def generation(text: str) -> str:
    """What LangChain's dumps(Generation(text=...)) writes."""
    return json.dumps({"lc": 1, "type": "constructor", "id": ["langchain", "schema", "output", "Generation"],
                       "kwargs": {"text": text, "type": "Generation"}})


def load(client, keys: int) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(keys):
        topic = TOPICS[i % len(TOPICS)]
        key = hashlib.md5(f"Explain {topic} in case {i}[('model_name', 'gpt-4o-mini')]".encode()).hexdigest()
        pipe.hset(key, mapping={"0": generation(f"Here is a careful answer about {topic} for case {i}. It explains the idea, "
                                                f"gives an example and ends with a caveat about the edge cases.")})
        pipe.expire(key, 86400 + i % 3600)
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()


def floor_pass(client) -> int:
    seen, cursor = 0, 0
    while True:
        cursor, batch = client.scan(cursor=cursor, count=1000)
        if batch:
            pipe = client.pipeline(transaction=False)
            for key in batch:
                pipe.ttl(key)
            seen += len(pipe.execute())
        if cursor == 0:
            return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    server = RedisServer(scratch)
    try:
        client = server.client()
        started = time.perf_counter()
        load(client, args.keys)
        print(f"loaded {args.keys:,} LangChain entries ({client.info('memory')['used_memory'] / 2**20:.0f} MiB) in {time.perf_counter() - started:.1f} s")
        floor_s, seen = best(lambda: floor_pass(client), args.runs)
        assert seen >= args.keys
        backend = RedisBackend(TargetConfig(id=0, name="bench", kind="redis", location=server.url, full_speed=True,
                                            state_path=scratch / "state.json", options={"ping_samples": 5}))
        full_s, outcome = best(lambda: backend.check(), args.runs)
        assert outcome.reachable and outcome.stats["entries"] == args.keys, outcome.error
        assert not outcome.findings, [(f.code, f.subject) for f in outcome.findings[:5]]
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"floor  SCAN + pipelined TTL        {floor_s:7.2f} s")
        print(f"full   check (TTL, value, decode)  {full_s:7.2f} s   ratio {full_s / floor_s:.2f}x   (goal <= 1.5x)")
        print(f"peak RSS of this process {rss:.0f} MiB")
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
