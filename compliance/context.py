"""Who and where a change comes from: set once per request or task, read by `audit_append`."""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass(frozen=True)
class AuditContext:
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    source_ip: str = ""
    forwarded_for: str = ""


_current: contextvars.ContextVar[AuditContext | None] = contextvars.ContextVar("audit_context", default=None)


def current_context() -> AuditContext:
    ctx = _current.get()
    return ctx if ctx is not None else AuditContext(request_id="")


@contextmanager
def audit_context(**kwargs: str) -> Iterator[AuditContext]:
    ctx = AuditContext(**kwargs)
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)
