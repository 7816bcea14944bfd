"""aicache's on-disk format: names, fields, and what a check learns from one entry's bytes."""

from __future__ import annotations

import re
from typing import Any

import orjson

from healing.content import find_secrets, poison_reason

INDEX_NAME = ".index.json"
ENTRY_RE = re.compile(r"^[0-9a-f]{64}\.json$")
STRAY_RE = re.compile(
    r"(\.(tmp|temp|swp|swo|swn|bak|orig|rej|part)$|~$|^\.#|^#.*#$|^[0-9a-f]{64}$|^\.DS_Store$|\.json\.[A-Za-z0-9_-]+$)"
)
STORE = "."
PROBLEM_CODES = {"corrupt": "fs.entry_corrupt", "schema": "fs.entry_schema", "unreadable": "fs.entry_unreadable"}
STATE_VERSION = 4
ENTRY_FIELDS = {"key": str, "value": str, "timestamp": (int, float)}
OPTIONAL_FIELDS = {"ttl_seconds": (int, type(None)), "access_count": (int,), "last_accessed": (int, float, type(None))}

# Entry summary kept in the state file, one tuple per entry (marshal-friendly, compact):
# (mtime_ns, size, ino, ctime_ns, mode, problem, key, timestamp, ttl, access_count, last_accessed,
#  value_len, poison, secrets)
S_MTIME, S_SIZE, S_INO, S_CTIME, S_MODE, S_PROBLEM, S_KEY, S_TS, S_TTL, S_ACC, S_LAST, S_VLEN, S_POISON, S_SECRETS = range(14)


def _is_num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def analyze_entry_bytes(name: str, data: bytes) -> tuple:
    """Everything a check needs from one entry's bytes, as the tail of a summary tuple."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        stripped = data.lstrip()
        if not stripped:
            reason = "empty file"
        elif stripped[:1] == b"{":
            reason = "truncated JSON"
        else:
            reason = "not JSON"
        return ("corrupt:" + reason, None, None, None, None, None, None, None, ())
    if not isinstance(obj, dict):
        return (f"schema:top level is {type(obj).__name__}, not an object", None, None, None, None, None, None, None, ())
    problems = []
    for field, types in ENTRY_FIELDS.items():
        if field not in obj:
            problems.append(f"missing {field}")
        elif not isinstance(obj[field], types) or isinstance(obj[field], bool):
            problems.append(f"{field} is {type(obj[field]).__name__}")
    for field, types in OPTIONAL_FIELDS.items():
        if field in obj and (not isinstance(obj[field], types) or isinstance(obj[field], bool)):
            problems.append(f"{field} is {type(obj[field]).__name__}")
    if problems:
        return ("schema:" + ", ".join(problems), None, None, None, None, None, None, None, ())
    value = obj["value"]
    secrets = tuple(find_secrets(value))
    key = obj["key"]
    return (
        None,
        None if key == name[:-5] else key,  # None: the key is the file name (keeps the state file small)
        float(obj["timestamp"]),
        obj.get("ttl_seconds"),
        obj.get("access_count", 0),
        obj.get("last_accessed"),
        len(value),
        poison_reason(value),
        secrets,
    )


def index_record_for(entry: dict[str, Any], preview: str) -> dict[str, Any]:
    """The record aicache itself would write for this entry."""
    return {
        "created_at": entry["timestamp"],
        "last_accessed": entry.get("last_accessed"),
        "access_count": entry.get("access_count", 0),
        "prompt_preview": preview,
        "response_length": len(entry["value"]),
    }


def _same_number(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    if not (_is_num(a) and _is_num(b)):
        return False
    return abs(float(a) - float(b)) <= 1e-6


def record_disagreement(record: Any, summary: tuple) -> list[str]:
    """Fields in which an index record disagrees with its entry (empty when in sync)."""
    if not isinstance(record, dict):
        return ["record is not an object"]
    diffs = []
    if not _same_number(record.get("created_at"), summary[S_TS]):
        diffs.append("created_at")
    if record.get("response_length") != summary[S_VLEN]:
        diffs.append("response_length")
    if record.get("access_count") != summary[S_ACC]:
        diffs.append("access_count")
    if not _same_number(record.get("last_accessed"), summary[S_LAST]):
        diffs.append("last_accessed")
    return diffs
