"""Sensitive values never enter the record in clear: they are replaced by a short hash."""

from __future__ import annotations

import hashlib
import re
from typing import Any

URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^/:@\s]*:)(?P<password>[^@\s/]+)(?P<tail>@)")
SENSITIVE_KEY = re.compile(r"(pass(word)?|secret|token|api[_-]?key|credential|dsn|connection_string|private)", re.I)


def fingerprint_secret(value: str) -> str:
    return "redacted:sha256:" + hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()[:16]


def redact_url_passwords(text: str) -> str:
    """scheme://user:secret@host -> scheme://user:redacted:sha256:…@host"""
    return URL_PASSWORD.sub(lambda m: m["head"] + fingerprint_secret(m["password"]) + m["tail"], text)


def redact(value: Any) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if isinstance(key, str) and SENSITIVE_KEY.search(key) and isinstance(item, str) and item:
                out[key] = fingerprint_secret(item)
            else:
                out[key] = redact(item)
        return out
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    if isinstance(value, str) and "://" in value:
        return redact_url_passwords(value)
    return value
