"""The one way anything writes to the record."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from compliance.actions import Action
from compliance.actors import Actor
from compliance.context import current_context
from compliance.keys import chain_key, key_id, load_public_pem, mac, public_key, public_pem, sign
from compliance.models import AuditEvent, ChainHead, Checkpoint
from compliance.redaction import redact
from compliance.verify import VerifyResult, iso, load_checkpoint_files, verify_chain

GENESIS_HASH = "0" * 64


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


EVENT_FIELDS = ("seq", "at", "actor_kind", "actor_id", "actor_label", "actor_version", "action", "object_type", "object_id",
                "scope", "summary", "before", "after", "request_id", "source_ip", "forwarded_for", "prev_hash", "hash")


def canonical_form(row: Any) -> dict[str, Any]:
    """The hashed form of an event, from a model instance or a mapping with EVENT_FIELDS."""
    get = row.__getitem__ if isinstance(row, dict) else (lambda k: getattr(row, k))
    at: datetime = get("at")
    return {
        "seq": get("seq"),
        "at": at.isoformat(timespec="microseconds"),
        "actor": [get("actor_kind"), get("actor_id"), get("actor_label"), get("actor_version")],
        "action": get("action"),
        "object": [get("object_type"), get("object_id")],
        "scope": get("scope"),
        "summary": get("summary"),
        "before": get("before"),
        "after": get("after"),
        "request": [get("request_id"), get("source_ip"), get("forwarded_for")],
        "prev": get("prev_hash"),
    }


def event_canonical_form(event: AuditEvent) -> dict[str, Any]:
    return canonical_form(event)


def event_hash(event: AuditEvent) -> str:
    """A keyed MAC of the event's canonical form (which includes the previous event's hash)."""
    return row_mac(chain_key(), event)


def row_mac(key: bytes, row: Any) -> str:
    return mac(key, canonical_json(canonical_form(row)).encode("utf-8"))


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


def checkpoint_take() -> Checkpoint | None:
    """Sign the chain head if it moved since the last checkpoint; keep a copy outside the database."""
    head = ChainHead.objects.filter(pk=1).first()
    if head is None or head.seq == 0:
        return None
    last = Checkpoint.objects.order_by("-seq").first()
    if last is not None and last.seq >= head.seq:
        return None
    event = AuditEvent.objects.filter(seq=head.seq).values("seq", "hash").first()
    if event is None:
        return None
    at = timezone.now()
    statement = checkpoint_statement(event["seq"], event["hash"], at.isoformat(timespec="microseconds"))
    checkpoint, created = Checkpoint.objects.get_or_create(
        seq=event["seq"], defaults={"hash": event["hash"], "at": at, "key_id": key_id(), "signature": sign(statement)})
    if created:
        write_checkpoint_file(checkpoint)
    return checkpoint


def checkpoint_statement(seq: int, hash_: str, at_iso: str) -> bytes:
    return canonical_json({"seq": seq, "hash": hash_, "at": at_iso, "chain": "aicache-healing audit"}).encode()


def write_checkpoint_file(checkpoint: Checkpoint) -> Path:
    directory = Path(settings.COMPLIANCE["CHECKPOINT_DIR"])
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"checkpoint-{checkpoint.seq:012d}.json"
    body = {"seq": checkpoint.seq, "hash": checkpoint.hash, "at": checkpoint.at.isoformat(timespec="microseconds"),
            "key_id": checkpoint.key_id, "signature": checkpoint.signature, "public_key": public_pem()}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body, indent=2))
    os.replace(tmp, path)
    return path


def iter_events(batch: int = 5000):
    """Every event in seq order, fetched in keyset batches: memory stays flat however long the chain."""
    last = 0
    while True:
        rows = list(AuditEvent.objects.filter(seq__gt=last).order_by("seq").values(*EVENT_FIELDS)[:batch])
        if not rows:
            return
        yield from rows
        last = rows[-1]["seq"]


def chain_verify(*, public_key_pem: str | None = None) -> VerifyResult:
    """Verify the whole chain and every checkpoint (database and files)."""
    key = chain_key()
    pub = load_public_pem(public_key_pem) if public_key_pem else public_key()

    def mac_of(row: dict, seq: int | None = None) -> str:
        return row_mac(key, row if seq is None else {**row, "seq": seq})

    db_checkpoints = [{"seq": c.seq, "hash": c.hash, "at": iso(c.at), "signature": c.signature, "source": "database"} for c in Checkpoint.objects.all()]
    file_checkpoints, problems = load_checkpoint_files(Path(settings.COMPLIANCE["CHECKPOINT_DIR"]))
    result = verify_chain(iter_events(), mac_of=mac_of, checkpoints=db_checkpoints + file_checkpoints, public_key=pub,
                          statement_of=checkpoint_statement)
    result.problems.extend(problems)
    return result
