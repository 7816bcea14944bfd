"""What a cache key is, from its name, and how its client reads it.

- LangChain `RedisCache`: key md5(prompt + llm_string) in hex, no prefix; a hash of "0", "1", ... holding
  `dumps(Generation)` (LangChain serves an unparseable value as plain text);
- RedisVL `SemanticCache`: hashes under `llmcache:` (or the prefixes named) with prompt, response,
  prompt_vector, inserted_at, updated_at, entry_id and metadata (JSON);
- any other prefix the admin names: checked generically (TTL, size, type).
"""

from __future__ import annotations

import re

import orjson

from healing.backends.entries import Entry

LANGCHAIN = "langchain"
REDISVL = "redisvl"
GENERIC = "generic"
_MD5 = re.compile(rb"^[0-9a-f]{32}$")


def classify(key: bytes, redisvl: list[bytes], generic: list[bytes], langchain: bool) -> str | None:
    for prefix in redisvl:
        if key.startswith(prefix):
            return REDISVL
    for prefix in generic:
        if key.startswith(prefix):
            return GENERIC
    if langchain and _MD5.match(key):
        return LANGCHAIN
    return None


def subject_of(key: bytes) -> str:
    try:
        return key.decode()
    except UnicodeDecodeError:
        return "hex:" + key.hex()


def key_of(subject: str) -> bytes:
    return bytes.fromhex(subject[4:]) if subject.startswith("hex:") else subject.encode()


def _text(value: bytes) -> str | None:
    try:
        return value.decode()
    except UnicodeDecodeError:
        return None


def decode_langchain(subject: str, fields: dict[bytes, bytes]) -> tuple[Entry | None, str | None]:
    if not fields:
        return None, "an empty hash"
    texts = []
    for name, value in fields.items():
        if not name.isdigit():
            return None, f"field {name[:40]!r} is not a generation index"
        raw = _text(value)
        if raw is None:
            return None, f"generation {name.decode()} is not UTF-8 text"
        if raw.lstrip().startswith("{"):
            try:
                obj = orjson.loads(raw)
                text = obj["kwargs"]["text"]
                if not isinstance(text, str):
                    raise TypeError
            except (orjson.JSONDecodeError, KeyError, TypeError):
                return None, f"generation {name.decode()} is broken JSON: LangChain would serve the raw JSON as the answer"
            texts.append(text)
        else:
            texts.append(raw)
    return Entry(subject, None, "\n".join(texts), None, None, ""), None


def decode_redisvl(subject: str, fields: dict[bytes, bytes]) -> tuple[Entry | None, str | None]:
    missing = [name for name in (b"prompt", b"response") if name not in fields]
    if missing:
        return None, "no " + " and no ".join(m.decode() for m in missing) + " field: RedisVL cannot return it"
    prompt, response = _text(fields[b"prompt"]), _text(fields[b"response"])
    if prompt is None or response is None:
        return None, "prompt or response is not UTF-8 text"
    model = None
    if b"metadata" in fields:
        try:
            meta = orjson.loads(fields[b"metadata"])
        except orjson.JSONDecodeError:
            return None, "metadata is not JSON: RedisVL fails to deserialize the entry"
        if isinstance(meta, dict):
            for name in ("model", "model_name", "llm"):
                if isinstance(meta.get(name), str):
                    model = meta[name]
                    break
    ts = None
    try:
        ts = float(fields.get(b"inserted_at", b"") or 0) or None
    except ValueError:
        return None, "inserted_at is not a number"
    return Entry(subject, prompt, response, model, ts), None
