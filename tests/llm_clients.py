"""LLM caches written by their real client libraries where one installs (LangChain's SQLiteCache and
RedisCache, GPTCache, RedisVL's entry model with redis-py), and aicache's EnhancedCache `cache.db`
written exactly as aicache writes it (aicache itself is not installable: msgpack then zlib, its schema
and its key)."""

from __future__ import annotations

import hashlib
import sqlite3
import time
import zlib
from pathlib import Path

import msgpack

ANSWER = "A careful, complete answer about {topic}, with an example and a caveat."


def llm_string(model: str, **extra) -> str:
    """The llm string LangChain keys a cache entry by: the sorted params of the model."""
    params = {"_type": "openai", "model_name": model, "temperature": 0.0, "stop": None, **extra}
    return str(sorted(params.items()))


# --------------------------------------------------------------------------- aicache cache.db
AICACHE_SCHEMA = """
CREATE TABLE IF NOT EXISTS cache_entries (
    cache_key TEXT PRIMARY KEY,
    prompt TEXT NOT NULL,
    response BLOB NOT NULL,
    context BLOB,
    timestamp REAL NOT NULL,
    access_count INTEGER DEFAULT 0,
    last_accessed REAL,
    response_size INTEGER,
    compression_ratio REAL DEFAULT 1.0,
    semantic_tags TEXT,
    cost_estimate REAL DEFAULT 1.0,
    priority_score REAL DEFAULT 0.0
);
CREATE INDEX IF NOT EXISTS idx_timestamp_accessed ON cache_entries(timestamp, last_accessed);
CREATE INDEX IF NOT EXISTS idx_access_count ON cache_entries(access_count DESC);
CREATE INDEX IF NOT EXISTS idx_timestamp ON cache_entries(timestamp);
CREATE INDEX IF NOT EXISTS idx_last_accessed ON cache_entries(last_accessed);
CREATE INDEX IF NOT EXISTS idx_priority ON cache_entries(priority_score DESC);
"""


def _pack(data) -> bytes:
    return zlib.compress(msgpack.packb(data, use_bin_type=True), level=6)


class AicacheDb:
    """aicache EnhancedCache's storage: set() and delete() as it does them."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path)
        conn.executescript(AICACHE_SCHEMA)
        conn.close()

    def key(self, prompt: str, context: dict) -> str:
        hasher = hashlib.sha256(prompt.encode())
        if context:
            hasher.update(msgpack.packb(context, use_bin_type=True))
        return hasher.hexdigest()

    def set(self, prompt: str, response: str, context: dict | None = None, *, conn: sqlite3.Connection | None = None) -> str:
        context = context or {}
        key = self.key(prompt, context)
        packed = _pack(response)
        now = time.time()
        own = conn is None
        conn = conn or sqlite3.connect(self.path, timeout=30)
        conn.execute(
            "INSERT OR REPLACE INTO cache_entries (cache_key, prompt, response, context, timestamp, last_accessed, response_size, "
            "compression_ratio, cost_estimate, priority_score) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key, prompt, packed, _pack(context), now, now, len(response.encode()), len(packed) / len(msgpack.packb(response, use_bin_type=True)), 1.0, 0.0),
        )
        if own:
            conn.commit()
            conn.close()
        return key

    def delete(self, key: str) -> None:
        conn = sqlite3.connect(self.path, timeout=30)
        conn.execute("DELETE FROM cache_entries WHERE cache_key = ?", (key,))
        conn.commit()
        conn.close()


def aicache_db(path: Path, count: int = 30) -> AicacheDb:
    cache = AicacheDb(path)
    conn = sqlite3.connect(path)
    for i in range(count):
        cache.set(f"prompt number {i}: explain topic {i}", ANSWER.format(topic=i), {"model": "gpt-4o-mini"}, conn=conn)
    conn.commit()
    conn.close()
    return cache


# --------------------------------------------------------------------------- LangChain
def langchain_db(path: Path, count: int = 30, *, model: str = "gpt-4o-mini"):
    from langchain_community.cache import SQLiteCache
    from langchain_core.outputs import Generation

    cache = SQLiteCache(database_path=str(path))
    for i in range(count):
        cache.update(f"prompt number {i}: explain topic {i}", llm_string(model), [Generation(text=ANSWER.format(topic=i))])
    cache.engine.dispose()
    return cache


def langchain_put(path: Path, prompt: str, text: str, *, model: str = "gpt-4o-mini", **extra) -> None:
    from langchain_community.cache import SQLiteCache
    from langchain_core.outputs import Generation

    cache = SQLiteCache(database_path=str(path))
    cache.update(prompt, llm_string(model, **extra), [Generation(text=text)])
    cache.engine.dispose()


# --------------------------------------------------------------------------- GPTCache
def gptcache_db(path: Path, count: int = 30) -> list[int]:
    import numpy as np
    from gptcache.manager import CacheBase
    from gptcache.manager.scalar_data.base import Answer, CacheData, DataType

    store = CacheBase("sqlite", sql_url=f"sqlite:///{path}")
    ids = store.batch_insert([
        CacheData(question=f"question {i}: what about topic {i}?", answers=[Answer(ANSWER.format(topic=i), DataType.STR)],
                  embedding_data=np.array([float(i), 1.0], dtype="float32"))
        for i in range(count)
    ])
    store.close()
    return ids


def dump(path: Path) -> list[str]:
    """Every row of every table, as SQL: the content of a database, whatever its page layout."""
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


# --------------------------------------------------------------------------- Redis
def langchain_redis(client, count: int = 30, *, ttl: int | None = 86400, model: str = "gpt-4o-mini", start: int = 0):
    """LangChain's RedisCache writing entries through its own update()."""
    from langchain_community.cache import RedisCache
    from langchain_core.outputs import Generation

    cache = RedisCache(redis_=client, ttl=ttl)
    for i in range(start, start + count):
        cache.update(f"prompt number {i}: explain topic {i}", llm_string(model), [Generation(text=ANSWER.format(topic=i))])
    return cache


def langchain_redis_key(prompt: str, *, model: str = "gpt-4o-mini") -> str:
    from langchain_community.cache import RedisCache

    return RedisCache._key(prompt, llm_string(model))


def redisvl_put(client, prompt: str, response: str, *, metadata: dict | None = None, filters: dict | None = None,
                ttl: int | None = 86400, prefix: str = "llmcache") -> str:
    """An entry as RedisVL's SemanticCache stores it: its own CacheEntry model serialises the hash (the
    SemanticCache class itself needs the search module, which Debian's redis-server lacks)."""
    from redisvl.extensions.cache.llm.schema import CacheEntry

    entry = CacheEntry(prompt=prompt, response=response, prompt_vector=[0.1, 0.2, 0.3, 0.4], metadata=metadata, filters=filters)
    key = f"{prefix}:{entry.entry_id}"
    client.hset(key, mapping=entry.to_dict(dtype="float32"))
    if ttl:
        client.expire(key, ttl)
    return key
