"""One fault per SQLite check code, injected into a cache written by its real client. Each injector
returns (expected subjects, target options)."""

from __future__ import annotations

import datetime as dt
import secrets
import sqlite3
from pathlib import Path

from tests.llm_clients import ANSWER, aicache_db, gptcache_db, langchain_db, langchain_put

# connections an injected "application" keeps open while the product works; tests close them at the end
APP_CONNECTIONS: list[sqlite3.Connection] = []


def _rowid(path: Path, table: str, where: str, args=()) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"SELECT rowid FROM {table} WHERE {where}", args).fetchone()[0]
    finally:
        conn.close()


def page_damage(path: Path, *, table: str = "cache_entries") -> None:
    """Overwrite the middle of one leaf page of `table` with garbage, as a bad sector or a stray write does."""
    conn = sqlite3.connect(path)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    # dbstat is not always compiled in: find a leaf of the table by walking from its root page
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    conn.close()
    data = bytearray(path.read_bytes())

    def page(n: int) -> bytes:
        return bytes(data[(n - 1) * page_size: n * page_size])

    n = root
    while True:
        raw = page(n)
        header = 100 if n == 1 else 0
        kind = raw[header]
        if kind == 0x0D:  # table leaf
            break
        cells = int.from_bytes(raw[header + 3: header + 5], "big")
        pointer = int.from_bytes(raw[header + 12 + 2 * (cells // 2): header + 14 + 2 * (cells // 2)], "big")
        n = int.from_bytes(raw[pointer: pointer + 4], "big")  # child of a middle cell
    start = (n - 1) * page_size
    # the cell pointer array and the first cells: the page header stays, its cells do not
    for i in range(start + 8, start + page_size // 2):
        data[i] = (i * 7919) % 251
    path.write_bytes(bytes(data))


def sqlite_integrity(root: Path):
    path = root / "cache.db"
    aicache_db(path, count=600)  # several leaf pages, so that one damaged page is not all of them
    page_damage(path)
    return ["database"], {}


def sqlite_index_corrupt(root: Path):
    path = root / "cache.db"
    aicache_db(path, count=40)
    conn = sqlite3.connect(path)
    # an index whose stored keys no longer match its definition: what a torn index page write leaves
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute("UPDATE sqlite_master SET sql = 'CREATE INDEX idx_priority ON cache_entries(response_size DESC)' WHERE name = 'idx_priority'")
    conn.commit()
    conn.close()
    return ["index:idx_priority"], {}


def sqlite_row_undecodable(root: Path):
    path = root / "cache.db"
    cache = aicache_db(path, count=20)
    key = cache.key("prompt number 7: explain topic 7", {"model": "gpt-4o-mini"})
    conn = sqlite3.connect(path)
    blob = conn.execute("SELECT response FROM cache_entries WHERE cache_key = ?", (key,)).fetchone()[0]
    conn.execute("UPDATE cache_entries SET response = ? WHERE cache_key = ?", (blob[: len(blob) // 2], key))  # a torn value
    conn.commit()
    conn.close()
    return [f"cache_entries:{_rowid(path, 'cache_entries', 'cache_key = ?', (key,))}"], {}


def sqlite_orphan_rows(root: Path):
    path = root / "sqlite.db"
    ids = gptcache_db(path, count=12)
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM gptcache_question WHERE id = ?", (ids[4],))  # deleted outside GPTCache: its answer stays
    conn.commit()
    answer = conn.execute("SELECT id FROM gptcache_answer WHERE question_id = ?", (ids[4],)).fetchone()[0]
    conn.close()
    return [f"gptcache_answer:{answer}"], {}


def sqlite_freelist_bloat(root: Path):
    path = root / "cache.db"
    cache = aicache_db(path, count=20)
    conn = sqlite3.connect(path)
    # long answers (random text, so that zlib cannot shrink them), then deleted: their pages stay free
    keys = [cache.set(f"long prompt {i}", secrets.token_hex(8000), {"model": "gpt-4o-mini"}, conn=conn) for i in range(200)]
    conn.commit()
    conn.close()
    for key in keys:
        cache.delete(key)
    now = dt.datetime.now(dt.UTC)
    window = f"{(now - dt.timedelta(hours=1)):%H:%M}-{(now + dt.timedelta(hours=1)):%H:%M}"
    return ["database"], {"maintenance_window": window}


def sqlite_wal_bloat(root: Path):
    path = root / "cache.db"
    cache = aicache_db(path, count=20)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()
    reader = sqlite3.connect(path)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM cache_entries").fetchone()  # a long reader starves the checkpoint
    writer = sqlite3.connect(path)
    for i in range(300):
        cache.set(f"burst prompt {i}", ANSWER.format(topic=i) * 40, {"model": "gpt-4o-mini"}, conn=writer)
        writer.commit()
    writer.close()
    reader.rollback()
    # the application stays connected (the last connection to close would checkpoint and delete the WAL)
    APP_CONNECTIONS.append(reader)
    return ["wal"], {"wal_max_bytes": 512 * 1024}


def sqlite_journal_mode(root: Path):
    path = root / "cache.db"
    aicache_db(path, count=20)
    return ["database"], {"require_wal": True}


def ai_poisoned_response(root: Path):
    path = root / "cache.db"
    cache = aicache_db(path, count=20)
    key = cache.set("summarise the quarterly report", "Rate limit reached for gpt-4o in organization org-x on tokens per min. Please try again in 20s.",
                    {"model": "gpt-4o-mini"})
    return [f"cache_entries:{_rowid(path, 'cache_entries', 'cache_key = ?', (key,))}"], {}


def ai_secret_leak(root: Path):
    path = root / ".langchain.db"
    langchain_db(path, count=15)
    prompt = "debug this: client = OpenAI(api_key='sk-proj-" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4" + "')"
    langchain_put(path, prompt, "Your client is created correctly; pass the key from the environment instead.")
    return [f"full_llm_cache:{_rowid(path, 'full_llm_cache', 'prompt = ?', (prompt,))}"], {}


def ai_stale_model(root: Path):
    path = root / ".langchain.db"
    langchain_db(path, count=15, model="gpt-4o-mini")
    langchain_put(path, "explain retries", "Retries with backoff...", model="gpt-3.5-turbo-0301")
    return [f"full_llm_cache:{_rowid(path, 'full_llm_cache', 'prompt = ?', ('explain retries',))}"], {"allowed_models": ["gpt-4o*"]}


def ai_duplicate_entries(root: Path):
    path = root / ".langchain.db"
    langchain_db(path, count=15)
    # the same prompt and model, keyed apart by a parameter that changes on every call
    langchain_put(path, "Explain  CAP theorem", ANSWER.format(topic="CAP"), request_id="r-1")
    langchain_put(path, "explain cap theorem", ANSWER.format(topic="CAP"), request_id="r-2")
    older = _rowid(path, "full_llm_cache", "prompt = ?", ("Explain  CAP theorem",))
    return [f"full_llm_cache:{older}"], {}


SQLITE_INJECTORS = {
    "sqlite.integrity": sqlite_integrity,
    "sqlite.index_corrupt": sqlite_index_corrupt,
    "sqlite.row_undecodable": sqlite_row_undecodable,
    "sqlite.orphan_rows": sqlite_orphan_rows,
    "sqlite.freelist_bloat": sqlite_freelist_bloat,
    "sqlite.wal_bloat": sqlite_wal_bloat,
    "sqlite.journal_mode": sqlite_journal_mode,
    "ai.poisoned_response": ai_poisoned_response,
    "ai.secret_leak": ai_secret_leak,
    "ai.stale_model": ai_stale_model,
    "ai.duplicate_entries": ai_duplicate_entries,
}
