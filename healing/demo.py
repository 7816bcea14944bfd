"""Clearly labelled demo stores — an aicache file store and an aicache `cache.db` — with realistic
entries and a few injected faults, so that a newcomer sees the whole loop (detect, diagnose, repair,
verify) within a minute of starting, with nothing else to install."""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import time
import zlib
from pathlib import Path

import msgpack

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


# aicache EnhancedCache's table, as the client creates it (values are msgpack, then zlib)
AICACHE_DB_SCHEMA = """
CREATE TABLE IF NOT EXISTS cache_entries (
    cache_key TEXT PRIMARY KEY, prompt TEXT NOT NULL, response BLOB NOT NULL, context BLOB, timestamp REAL NOT NULL,
    access_count INTEGER DEFAULT 0, last_accessed REAL, response_size INTEGER, compression_ratio REAL DEFAULT 1.0,
    semantic_tags TEXT, cost_estimate REAL DEFAULT 1.0, priority_score REAL DEFAULT 0.0
);
CREATE INDEX IF NOT EXISTS idx_timestamp_accessed ON cache_entries(timestamp, last_accessed);
CREATE INDEX IF NOT EXISTS idx_timestamp ON cache_entries(timestamp);
"""
DEMO_SQLITE_MODELS = ["gpt-4o*", "claude-3-5-*", "gemini-1.5-*"]


def build_demo_sqlite(path: Path, *, rows: int = 150, seed: int = 11) -> Path:
    """Write the demo `cache.db` (idempotent: an existing file is left alone). Allowed models for its
    target: DEMO_SQLITE_MODELS."""
    path = Path(path)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    now = time.time()
    tmp = path.with_name(path.name + ".building")
    tmp.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp)
    conn.executescript(AICACHE_DB_SCHEMA)

    def put(prompt: str, response: str, context: dict, at: float, *, blob: bytes | None = None) -> None:
        key = hashlib.sha256(prompt.encode() + msgpack.packb(context, use_bin_type=True)).hexdigest()
        packed = blob if blob is not None else _pack(response)
        conn.execute("INSERT OR REPLACE INTO cache_entries (cache_key, prompt, response, context, timestamp, access_count, last_accessed, "
                     "response_size) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     (key, prompt, packed, _pack(context), at, rng.randint(0, 30), at + rng.uniform(0, 3000), len(response.encode())))

    for i in range(rows):
        prompt = f"{rng.choice(PROMPTS)} (ticket {1000 + i})"
        model = rng.choice(["gpt-4o-mini", "claude-3-5-sonnet", "gemini-1.5-pro"])
        put(prompt, ANSWER.format(prompt=prompt, n=rng.randint(2, 7)), {"model": model, "temperature": 0}, now - rng.uniform(3600, 20 * 86400))
    outage = now - 5 * 3600
    # a provider outage cached as answers, within minutes
    for i, text in enumerate(["Service Unavailable", "Error code: 429 - Rate limit reached for requests. Please try again in 20s.",
                              "upstream connect error or disconnect/reset before headers"]):
        put(f"Summarise yesterday's deploy log (run {i})", text, {"model": "gpt-4o-mini", "temperature": 0}, outage + i * 90)
    # answers from a model the team retired
    for i in range(4):
        prompt = f"Classify the sentiment of review #{i}"
        put(prompt, ANSWER.format(prompt=prompt, n=3), {"model": "text-davinci-003", "temperature": 0}, now - 40 * 86400 - i)
    # the same prompt cached under unstable keys (a request id in the context)
    for i in range(2):
        prompt = "Explain our refund policy to a customer in two sentences"
        put(prompt, ANSWER.format(prompt=prompt, n=2), {"model": "gpt-4o-mini", "request_id": f"req-{rng.getrandbits(48):012x}"}, now - 7200 + i)
    # a secret pasted into a prompt
    prompt = "Why does aws s3 ls fail with AKIAIOSFODNN7EXAMPLE as the access key?"
    put(prompt, ANSWER.format(prompt=prompt, n=4), {"model": "gpt-4o-mini", "temperature": 0}, now - 86400)
    # a row torn by a crash: the response blob cut short
    prompt = "Write release notes for version 4.2"
    put(prompt, ANSWER.format(prompt=prompt, n=5), {"model": "gpt-4o-mini", "temperature": 0}, now - 3 * 3600,
        blob=_pack(ANSWER.format(prompt=prompt, n=5))[:17])
    conn.commit()
    conn.close()
    os.replace(tmp, path)
    return path


def _pack(data) -> bytes:
    return zlib.compress(msgpack.packb(data, use_bin_type=True), level=6)
