"""A clearly labelled demo store: realistic aicache entries with a few injected faults, so that a
newcomer sees the whole loop (detect, diagnose, repair, verify) within a minute of starting."""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from pathlib import Path

PROMPTS = [
    "Summarise the attached incident report in three bullet points",
    "Write a SQL query that returns the ten most active customers last month",
    "Explain the difference between a process and a thread",
    "Translate 'the cache is warm' into French and German",
    "Draft a polite reply declining the meeting on Friday",
    "What does HTTP status 503 mean and how should a client retry?",
    "Refactor this Python function to use a dataclass",
    "List five failure modes of a write-ahead log",
    "Generate a regular expression that matches ISO 8601 dates",
    "Give me a haiku about eventual consistency",
]
ANSWER = (
    "Here is a careful answer to “{prompt}”.\n\n1. First, the context matters: {n} factors shape the result.\n"
    "2. Second, consider the trade-offs between latency and cost.\n3. Finally, verify the outcome with a test.\n"
)


def _key(prompt: str, context: dict | None = None) -> str:
    digest = hashlib.sha256(prompt.encode())
    if context:
        digest.update(json.dumps(context, sort_keys=True).encode())
    return digest.hexdigest()


def build_demo_store(root: Path, *, entries: int = 240, seed: int = 7) -> Path:
    """Write the demo store (idempotent: an existing store is left alone)."""
    root = Path(root)
    if (root / ".index.json").exists():
        return root
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    now = time.time()
    index: dict[str, dict] = {}
    keys = []
    for i in range(entries):
        prompt = f"{rng.choice(PROMPTS)} (case {i})"
        context = {"model": rng.choice(["gpt-4o-mini", "claude-3-5-sonnet", "gemini-1.5-pro"]), "temperature": 0}
        key = _key(prompt, context)
        created = now - rng.uniform(3600, 14 * 86400)
        entry = {"key": key, "value": ANSWER.format(prompt=prompt, n=rng.randint(2, 7)), "timestamp": created,
                 "ttl_seconds": None, "access_count": rng.randint(0, 40), "last_accessed": created + rng.uniform(0, 3000)}
        _write(root / f"{key}.json", entry, mtime=entry["last_accessed"])
        index[key] = {"created_at": created, "last_accessed": entry["last_accessed"], "access_count": entry["access_count"],
                      "prompt_preview": prompt[:100] + "..." if len(prompt) > 100 else prompt, "response_length": len(entry["value"])}
        keys.append(key)

    old = now - 2 * 3600
    # writer killed mid-burst: two truncated entries written within a second of each other
    for victim in keys[:2]:
        path = root / f"{victim}.json"
        path.write_bytes(path.read_bytes()[:70])
        os.utime(path, (old, old + keys.index(victim) * 0.4))
    # provider outage cached as answers
    for i, victim in enumerate(keys[2:5]):
        entry = json.loads((root / f"{victim}.json").read_text())
        entry["value"] = "Error code: 429 - Rate limit reached for requests. Please try again in 20s."
        entry["timestamp"] = old + i * 60
        index[victim]["created_at"] = entry["timestamp"]
        index[victim]["response_length"] = len(entry["value"])
        _write(root / f"{victim}.json", entry, mtime=old)
    # an expired entry, an index record gone stale, an orphan and a dangling record
    entry = json.loads((root / f"{keys[5]}.json").read_text())
    entry["ttl_seconds"] = 3600
    entry["timestamp"] = now - 3 * 86400
    index[keys[5]]["created_at"] = entry["timestamp"]
    _write(root / f"{keys[5]}.json", entry, mtime=old)
    index[keys[6]]["access_count"] += 5
    del index[keys[7]]
    ghost = _key("a prompt whose entry someone deleted by hand")
    index[ghost] = {"created_at": old, "last_accessed": old, "access_count": 1, "prompt_preview": "a prompt whose entry someone deleted by hand", "response_length": 42}
    # a secret pasted into a prompt
    index[keys[8]]["prompt_preview"] = "Why does my key sk-demoDEMOdemoDEMOdemoDEMO1234 get a 401?"
    # an editor's swap file left behind
    swap = root / ".notes.swp"
    swap.write_bytes(b"b0VIM 9.0\x00" + bytes(64))
    os.utime(swap, (old, old))
    (root / ".index.json").write_text(json.dumps(index))
    os.utime(root / ".index.json", (old, old))
    return root


def _write(path: Path, entry: dict, *, mtime: float) -> None:
    path.write_text(json.dumps(entry, indent=2))
    os.chmod(path, 0o600)
    os.utime(path, (mtime, mtime))
