"""One injector per file-store check code. Each takes a healthy store written by the aicache client
and breaks exactly one thing, returning the subjects that must be reported."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tests.aicache_client import CoreCache
from tests.conftest import entry_names, read_index


def _write_index(root: Path, index: dict) -> None:
    (root / ".index.json").write_text(json.dumps(index))


def entry_corrupt(root: Path) -> list[str]:
    name = entry_names(root)[3]
    data = (root / name).read_bytes()
    (root / name).write_bytes(data[: len(data) // 2])  # a write cut short
    return [name]


def entry_schema(root: Path) -> list[str]:
    name = entry_names(root)[4]
    entry = json.loads((root / name).read_text())
    del entry["value"]
    entry["timestamp"] = "yesterday"
    (root / name).write_text(json.dumps(entry, indent=2))
    return [name]


def entry_key_mismatch(root: Path) -> list[str]:
    name = entry_names(root)[5]
    entry = json.loads((root / name).read_text())
    entry["key"] = "0" * 64
    (root / name).write_text(json.dumps(entry, indent=2))
    return [name]


def entry_unreadable(root: Path) -> list[str]:
    """An entry name whose read fails with an I/O error that no chmod fixes (EISDIR)."""
    name = "f" * 64 + ".json"
    (root / name).mkdir(mode=0o500)
    return [name]


def index_unreadable(root: Path) -> list[str]:
    (root / ".index.json").write_bytes(b'{"abc": {"created_at": 1.0, "last_acc')
    return [".index.json"]


def index_orphan(root: Path) -> list[str]:
    index = read_index(root)
    key = sorted(index)[6]
    del index[key]
    _write_index(root, index)
    return [f"{key}.json"]


def index_dangling(root: Path) -> list[str]:
    name = entry_names(root)[7]
    (root / name).unlink()  # deleted outside aicache: the record stays
    return [name]


def index_stale(root: Path) -> list[str]:
    index = read_index(root)
    key = sorted(index)[8]
    index[key]["access_count"] = 17
    index[key]["response_length"] = 3
    _write_index(root, index)
    return [f"{key}.json"]


def entry_expired(root: Path) -> list[str]:
    CoreCache(root).set("a prompt with a short ttl", "an answer that expired", ttl_seconds=60, now=time.time() - 3600)
    return [CoreCache.key_for("a prompt with a short ttl") + ".json"]


def entry_future(root: Path) -> list[str]:
    CoreCache(root).set("a prompt from a machine with a fast clock", "an answer from the future", now=time.time() + 7 * 86400)
    return [CoreCache.key_for("a prompt from a machine with a fast clock") + ".json"]


def stray_file(root: Path) -> list[str]:
    (root / ".notes.txt.swp").write_bytes(b"b0VIM 9.0" + bytes(100))
    return [".notes.txt.swp"]


def permissions(root: Path) -> list[str]:
    name = entry_names(root)[9]
    os.chmod(root / name, 0o666)
    os.chmod(root, 0o777)
    return [".", name]


def poisoned_response(root: Path) -> list[str]:
    cache = CoreCache(root)
    key = cache.set("summarise the quarterly report", "Error code: 429 - Rate limit reached for requests. Please try again in 20s.")
    return [f"{key}.json"]


def secret_leak(root: Path) -> list[str]:
    cache = CoreCache(root)
    key = cache.set("why does my key sk-proj-AbCdEfGhIjKlMnOpQrStUvWx0123 return 401?", "Because it was revoked.")
    return [f"{key}.json"]


def size_budget(root: Path) -> list[str]:
    return ["."]


INJECTORS = {
    "fs.entry_corrupt": entry_corrupt,
    "fs.entry_schema": entry_schema,
    "fs.entry_key_mismatch": entry_key_mismatch,
    "fs.entry_unreadable": entry_unreadable,
    "fs.index_unreadable": index_unreadable,
    "fs.index_orphan": index_orphan,
    "fs.index_dangling": index_dangling,
    "fs.index_stale": index_stale,
    "fs.entry_expired": entry_expired,
    "fs.entry_future": entry_future,
    "fs.stray_file": stray_file,
    "fs.permissions": permissions,
    "fs.size_budget": size_budget,
    "ai.poisoned_response": poisoned_response,
    "ai.secret_leak": secret_leak,
}
