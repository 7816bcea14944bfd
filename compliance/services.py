"""The one way anything writes to the record."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from compliance.actions import Action
from compliance.actors import Actor
from compliance.context import current_context
from compliance.models import AuditEvent, ChainHead
from compliance.redaction import redact

GENESIS_HASH = "0" * 64


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def event_canonical_form(event: AuditEvent) -> dict[str, Any]:
    at: datetime = event.at
    return {
        "seq": event.seq,
        "at": at.isoformat(timespec="microseconds"),
        "actor": [event.actor_kind, event.actor_id, event.actor_label, event.actor_version],
        "action": event.action,
        "object": [event.object_type, event.object_id],
        "scope": event.scope,
        "summary": event.summary,
        "before": event.before,
        "after": event.after,
        "request": [event.request_id, event.source_ip, event.forwarded_for],
        "prev": event.prev_hash,
    }


def event_hash(event: AuditEvent) -> str:
    return hashlib.sha256(canonical_json(event_canonical_form(event)).encode("utf-8")).hexdigest()


def _jsonable(value: Any) -> Any:
    return None if value is None else json.loads(canonical_json(redact(value)))


@contextmanager
def audited_transaction() -> Iterator[None]:
    """A transaction that will append to the record. It takes the chain lock first, so that every
    audited transaction locks rows in the same order (chain head, then the rest): no deadlocks."""
    with transaction.atomic():
        if not ChainHead.objects.select_for_update().filter(pk=1).exists():
            ChainHead.objects.get_or_create(pk=1, defaults={"seq": 0, "hash": GENESIS_HASH})
        yield


def audit_append(
    *,
    actor: Any,
    action: Action | str,
    object_type: str,
    object_id: Any,
    scope: str = "",
    summary: str = "",
    before: Any = None,
    after: Any = None,
) -> AuditEvent:
    """Append one event to the chain, inside the caller's transaction.

    Must be called from within `transaction.atomic()`: the event commits or rolls back with the
    change it records. The chain head row is locked so concurrent appenders never fork the chain.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("audit_append must run inside the transaction of the change it records")
    who = Actor.of(actor)
    ctx = current_context()
    head = ChainHead.objects.select_for_update().filter(pk=1).first()
    if head is None:
        head = ChainHead.objects.create(pk=1, seq=0, hash=GENESIS_HASH)
        head = ChainHead.objects.select_for_update().get(pk=1)
    event = AuditEvent(
        seq=head.seq + 1,
        at=timezone.now(),
        actor_kind=who.kind,
        actor_id=who.id,
        actor_label=who.label[:200],
        actor_version=who.version,
        action=str(action),
        object_type=object_type,
        object_id=str(object_id),
        scope=scope,
        summary=summary[:300],
        before=_jsonable(before),
        after=_jsonable(after),
        request_id=ctx.request_id,
        source_ip=ctx.source_ip,
        forwarded_for=ctx.forwarded_for[:300],
        prev_hash=head.hash,
    )
    event.hash = event_hash(event)
    event.save(force_insert=True)
    ChainHead.objects.filter(pk=1).update(seq=event.seq, hash=event.hash)
    return event
