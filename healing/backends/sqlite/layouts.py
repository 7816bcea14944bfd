"""The three SQLite LLM-cache layouts this backend knows, recognised from the schema.

- aicache EnhancedCache `cache.db`: `cache_entries(cache_key, prompt, response, context, timestamp, ...)`,
  response and context are msgpack then zlib (aicache falls back to plain msgpack when zlib fails);
- LangChain `SQLiteCache`: `full_llm_cache(prompt, llm, idx, response)`, response is `dumps(Generation)`
  (LangChain serves an unparseable value as plain text: older caches stored the raw text);
- GPTCache `sqlite.db`: `gptcache_question(id, question, create_on, last_access, embedding_data, deleted)`
  and `gptcache_answer(id, question_id, answer, answer_type)`; `deleted = -1` is GPTCache's soft delete.
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import msgpack

from healing.backends.base import BackendError
from healing.backends.entries import Entry, model_in


@dataclass
class Decoded:
    """One row as its client reads it: an entry for the AI checks, or why it cannot be read."""

    entry: Entry | None
    problem: str | None = None


def _aicache_unpack(blob) -> object:
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise ValueError(f"a {type(blob).__name__} where aicache stores bytes")
    raw = bytes(blob)
    try:
        raw = zlib.decompress(raw)
    except zlib.error:
        pass  # aicache's fallback: uncompressed msgpack
    return msgpack.unpackb(raw, raw=False)


def _epoch(text) -> float | None:
    if isinstance(text, int | float):
        return float(text)
    if not isinstance(text, str):
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


class Layout:
    name = ""
    title = ""
    tables: tuple[str, ...] = ()
    entry_table = ""
    # rows of this table carry the prompt/response the AI checks read
    columns = ""

    def decode(self, row: tuple) -> Decoded:  # row = (rowid, *columns)
        raise NotImplementedError

    def related(self, conn: sqlite3.Connection, table: str, rowids: list[int]) -> list[tuple[str, int]]:
        """The rows that make one cache entry with these rows (moved together by a quarantine)."""
        return [(table, r) for r in rowids]

    def orphan_queries(self) -> list[tuple[str, str]]:
        """(table, SELECT rowid ... WHERE rowid > ? AND rowid <= ? AND <no parent>) pairs."""
        return []

    def extra_scans(self) -> list[tuple[str, str]]:
        return []


class AicacheDb(Layout):
    name = "aicache"
    title = "aicache cache.db"
    tables = ("cache_entries",)
    entry_table = "cache_entries"
    columns = "cache_key, prompt, response, context, timestamp"

    def __init__(self) -> None:
        # contexts repeat (the same model and settings): decode each distinct blob once
        self._contexts: dict[bytes, tuple[str | None, str | None]] = {}

    def _context_model(self, blob) -> tuple[str | None, str | None]:
        """(model, problem) of a context blob."""
        key = bytes(blob) if isinstance(blob, bytes | bytearray | memoryview) else None
        if key is not None and key in self._contexts:
            return self._contexts[key]
        try:
            ctx = _aicache_unpack(blob)
            result = (ctx["model"] if isinstance(ctx, dict) and isinstance(ctx.get("model"), str) else None, None)
        except Exception as exc:  # noqa: BLE001
            result = (None, f"context does not decode (zlib, msgpack): {exc.__class__.__name__}")
        if key is not None and len(self._contexts) < 10000:
            self._contexts[key] = result
        return result

    def decode(self, row: tuple) -> Decoded:
        rowid, key, prompt, response, context, ts = row
        subject = f"cache_entries:{rowid}"
        try:
            text = _aicache_unpack(response)
        except Exception as exc:  # noqa: BLE001 - any decode failure is the finding
            return Decoded(None, f"response does not decode (zlib, msgpack): {exc.__class__.__name__}")
        if not isinstance(text, str):
            return Decoded(None, f"response decodes to a {type(text).__name__}, not text")
        model = None
        if context is not None:
            model, problem = self._context_model(context)
            if problem:
                return Decoded(None, problem)
        return Decoded(Entry(subject, prompt if isinstance(prompt, str) else None, text, model, _epoch(ts)))


class LangChainDb(Layout):
    name = "langchain"
    title = "LangChain SQLiteCache"
    tables = ("full_llm_cache",)
    entry_table = "full_llm_cache"
    columns = "prompt, llm, idx, response"

    def decode(self, row: tuple) -> Decoded:
        rowid, prompt, llm, idx, response = row
        subject = f"full_llm_cache:{rowid}"
        if not isinstance(response, str):
            return Decoded(None, "response is NULL" if response is None else f"response is a {type(response).__name__}, not text")
        text = response
        if response.lstrip().startswith("{"):
            try:
                obj = json.loads(response)
                text = obj["kwargs"]["text"]
                if not isinstance(text, str):
                    raise TypeError("text is not a string")
            except (ValueError, KeyError, TypeError) as exc:
                return Decoded(None, f"serialized generation is broken ({exc.__class__.__name__}): LangChain would serve the raw JSON as the answer")
        model = model_in(llm)
        dup = f"{prompt}\0{model}" if model and idx == 0 and isinstance(prompt, str) else ""
        # one entry is every idx of (prompt, llm): the prompt is checked once, on idx 0
        return Decoded(Entry(subject, prompt if idx == 0 and isinstance(prompt, str) else None, text, model, None, dup))

    def related(self, conn: sqlite3.Connection, table: str, rowids: list[int]) -> list[tuple[str, int]]:
        out: dict[tuple[str, int], None] = {}
        for rowid in rowids:
            out[(table, rowid)] = None
            if table != "full_llm_cache":
                continue
            row = conn.execute("SELECT prompt, llm FROM full_llm_cache WHERE rowid = ?", (rowid,)).fetchone()
            if row:
                for (sibling,) in conn.execute("SELECT rowid FROM full_llm_cache WHERE prompt = ? AND llm = ?", row):
                    out[(table, sibling)] = None
        return list(out)


class GptCacheDb(Layout):
    name = "gptcache"
    title = "GPTCache sqlite.db"
    tables = ("gptcache_question", "gptcache_answer")
    entry_table = "gptcache_question"
    columns = "question, create_on, deleted"
    CHILDREN = (("gptcache_answer", "question_id"), ("gptcache_question_dep", "question_id"), ("gptcache_session", "question_id"))

    def decode(self, row: tuple) -> Decoded:
        rowid, question, created, deleted = row
        if deleted == -1:
            return Decoded(None)  # soft-deleted: GPTCache no longer serves it
        return Decoded(Entry(f"gptcache_question:{rowid}", question if isinstance(question, str) else None, None, None, _epoch(created)))

    def extra_scans(self) -> list[tuple[str, str]]:
        # answers carry the responses; they are checked against their (live) question
        return [("gptcache_answer", "question_id, answer, answer_type")]

    def decode_answer(self, row: tuple, soft_deleted: set[int]) -> Decoded:
        rowid, question_id, answer, answer_type = row
        if question_id in soft_deleted:
            return Decoded(None)
        if answer_type not in (0, 1, 2):
            return Decoded(None, f"answer_type {answer_type!r} is none of GPTCache's (0 text, 1 image base64, 2 image URL)")
        if not isinstance(answer, str):
            return Decoded(None, "answer is NULL" if answer is None else f"answer is a {type(answer).__name__}, not text")
        if answer_type != 0:
            return Decoded(None)
        return Decoded(Entry(f"gptcache_question:{question_id}", None, answer, None, None, ""))

    def related(self, conn: sqlite3.Connection, table: str, rowids: list[int]) -> list[tuple[str, int]]:
        out: dict[tuple[str, int], None] = {(table, r): None for r in rowids}
        if table == "gptcache_question" and rowids:
            present = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            for child, column in self.CHILDREN:
                if child not in present:
                    continue
                for start in range(0, len(rowids), 500):
                    chunk = rowids[start:start + 500]
                    marks = ",".join("?" * len(chunk))
                    for (rowid,) in conn.execute(f"SELECT rowid FROM {child} WHERE {column} IN ({marks})", chunk):
                        out[(child, rowid)] = None
        return list(out)

    def orphan_queries(self) -> list[tuple[str, str]]:
        return [(child, f"SELECT c.rowid FROM {child} c WHERE c.rowid > ? AND c.rowid <= ? "
                        f"AND NOT EXISTS (SELECT 1 FROM gptcache_question q WHERE q.id = c.{column})")
                for child, column in self.CHILDREN]


LAYOUTS: list[Layout] = [AicacheDb(), LangChainDb(), GptCacheDb()]


def detect(tables: set[str], path: str) -> Layout:
    for layout in LAYOUTS:
        if set(layout.tables) <= tables:
            return layout
    shown = ", ".join(sorted(tables)[:12]) or "no tables"
    raise BackendError(
        f"{path} is a SQLite database but not an LLM cache this product knows (aicache cache.db with cache_entries, "
        f"LangChain SQLiteCache with full_llm_cache, GPTCache with gptcache_question/gptcache_answer); it holds: {shown}"
    )


def row_digest(values: tuple) -> str:
    """A stable digest of one row's values, types included (1 and 1.0 and '1' differ)."""
    import hashlib

    return hashlib.sha256(msgpack.packb([[type(v).__name__, v] for v in values], use_bin_type=True)).hexdigest()


def iter_rowids(first: int, last: int, step: int) -> Iterator[tuple[int, int]]:
    lo = first
    while lo <= last:
        yield lo, min(last, lo + step - 1)
        lo += step
