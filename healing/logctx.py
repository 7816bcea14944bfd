"""Structured log context: every line carries the request id, and the target and repair in hand."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from compliance.context import current_context

_fields: contextvars.ContextVar[dict | None] = contextvars.ContextVar("log_fields", default=None)


@contextmanager
def log_context(**fields: object) -> Iterator[None]:
    token = _fields.set({**(_fields.get() or {}), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _fields.reset(token)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        fields = _fields.get() or {}
        if not getattr(record, "request_id", None):
            record.request_id = current_context().request_id or None
        for key in ("target", "repair"):
            if not hasattr(record, key):
                setattr(record, key, fields.get(key))
        return True
