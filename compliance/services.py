"""The one way anything writes to the record."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from hashlib import blake2b
from pathlib import Path
from typing import Any

import orjson
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from compliance.actions import Action
from compliance.actors import Actor
from compliance.context import current_context
from compliance.keys import chain_key, key_id, load_public_pem, mac, public_key, public_pem, sign
from compliance.models import AuditEvent, ChainHead, Checkpoint
from compliance.redaction import redact, redact_url_passwords
from compliance.verify import Break, VerifyResult, iso, load_checkpoint_files, verify_chain
from config.forking import run_parts

GENESIS_HASH = "0" * 64


def canonical_bytes(value: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8: one byte string per value, at write time and at verify time."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)


def canonical_json(value: Any) -> str:
    return canonical_bytes(value).decode("utf-8")


EVENT_FIELDS = ("seq", "at", "actor_kind", "actor_id", "actor_label", "actor_version", "action", "object_type", "object_id",
                "scope", "summary", "before", "after", "request_id", "source_ip", "forwarded_for", "prev_hash", "hash")


def canonical_form(row: Any) -> dict[str, Any]:
    """The hashed form of an event, from a model instance or a mapping with EVENT_FIELDS."""
    r = row if isinstance(row, dict) else {name: getattr(row, name) for name in EVENT_FIELDS}
    at = r["at"]
    return {
        "seq": r["seq"],
        "at": at if isinstance(at, str) else at.isoformat(timespec="microseconds"),
        "actor": [r["actor_kind"], r["actor_id"], r["actor_label"], r["actor_version"]],
        "action": r["action"],
        "object": [r["object_type"], r["object_id"]],
        "scope": r["scope"],
        "summary": r["summary"],
        "before": r["before"],
        "after": r["after"],
        "request": [r["request_id"], r["source_ip"], r["forwarded_for"]],
        "prev": r["prev_hash"],
    }


def event_canonical_form(event: AuditEvent) -> dict[str, Any]:
    return canonical_form(event)


def event_hash(event: AuditEvent) -> str:
    """A keyed MAC of the event's canonical form (which includes the previous event's hash)."""
    return row_mac(chain_key(), event)


def row_mac(key: bytes, row: Any) -> str:
    return mac(key, canonical_bytes(canonical_form(row)))


def row_mac_fast(key: bytes, r: dict) -> str:
    """row_mac for the plain dicts of iter_events (the verification hot path), in one call."""
    data = orjson.dumps({"action": r["action"], "actor": [r["actor_kind"], r["actor_id"], r["actor_label"], r["actor_version"]],
                         "after": r["after"], "at": r["at"], "before": r["before"], "object": [r["object_type"], r["object_id"]],
                         "prev": r["prev_hash"], "request": [r["request_id"], r["source_ip"], r["forwarded_for"]], "scope": r["scope"],
                         "seq": r["seq"], "summary": r["summary"]}, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)
    return blake2b(data, key=key, digest_size=32).hexdigest()


def _jsonable(value: Any) -> Any:
    return None if value is None else orjson.loads(canonical_bytes(redact(value)))


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
        summary=redact_url_passwords(summary)[:300],
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


def _iso_at(value: Any) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:  # SQLite hands back UTC as a naive datetime
            return value.isoformat(timespec="microseconds") + "+00:00"
        return value.isoformat(timespec="microseconds")
    text = str(value).replace(" ", "T")  # SQLite keeps UTC as text, without the fraction when it is zero
    if "." not in text:
        text += ".000000"
    return text if text.endswith("+00:00") else text + "+00:00"


def _json_column(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def iter_events(batch: int = 5000, *, start: int = 1, end: int | None = None):
    """Every event in seq order, as plain dicts, fetched in keyset batches with a plain cursor:
    memory stays flat however long the chain, and no ORM conversion stands between rows and hashes."""
    table = AuditEvent._meta.db_table
    upper = f" AND seq <= {int(end)}" if end is not None else ""
    # on SQLite, read the time as the text it is stored as: cheaper than a datetime made only to be printed
    columns = ", ".join("CAST(at AS TEXT)" if name == "at" and connection.vendor == "sqlite" else name for name in EVENT_FIELDS)
    sql = f"SELECT {columns} FROM {table} WHERE seq > %s{upper} ORDER BY seq LIMIT {int(batch)}"
    last = start - 1
    with connection.cursor() as cursor:
        while True:
            cursor.execute(sql, [last])
            rows = cursor.fetchall()
            if not rows:
                return
            for values in rows:
                row = dict(zip(EVENT_FIELDS, values, strict=True))
                row["at"] = _iso_at(row["at"])
                row["before"] = _json_column(row["before"])
                row["after"] = _json_column(row["after"])
                yield row
            last = rows[-1][0]


def chain_verify(*, public_key_pem: str | None = None, processes: int | None = None) -> VerifyResult:
    """Verify the whole chain and every checkpoint (database and files). Long chains are verified in
    segments by forked processes; each event's hash and link are independent of the others'."""
    key = chain_key()
    pub = load_public_pem(public_key_pem) if public_key_pem else public_key()
    db_checkpoints = [{"seq": c.seq, "hash": c.hash, "at": iso(c.at), "signature": c.signature, "source": "database"} for c in Checkpoint.objects.all()]
    file_checkpoints, problems = load_checkpoint_files(Path(settings.COMPLIANCE["CHECKPOINT_DIR"]))
    checkpoints = db_checkpoints + file_checkpoints
    top = AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first() or 0
    parts = processes or (int(settings.COMPLIANCE["VERIFY_PROCESSES"]) if top >= int(settings.COMPLIANCE["VERIFY_PARALLEL_MIN_EVENTS"]) else 1)
    bounds = [(1 + top * i // parts, top * (i + 1) // parts) for i in range(parts)] if top else [(1, 0)]

    def mac_of(row: dict, seq: int | None = None) -> str:
        return row_mac_fast(key, row if seq is None else {**row, "seq": seq})

    def segment(lo: int, hi: int, last: bool) -> dict:
        prev = GENESIS_HASH if lo == 1 else AuditEvent.objects.filter(seq=lo - 1).values_list("hash", flat=True).first()
        result = verify_chain(iter_events(start=lo, end=None if last else hi), mac_of=mac_of, checkpoints=checkpoints,
                              public_key=pub, statement_of=checkpoint_statement, start=lo, prev=prev, end=None if last else hi)
        return result.as_dict()

    jobs = [(lo, hi, i == len(bounds) - 1) for i, (lo, hi) in enumerate(bounds)]
    parts_done = run_parts(segment, jobs, before_child=_fresh_connections) if len(jobs) > 1 else [segment(*jobs[0])]
    final = VerifyResult(problems=problems)
    for done in parts_done:
        final.events += done["events"]
        final.checkpoints, final.latest_checkpoint = done["checkpoints"], done["latest_checkpoint"]
        if final.first_break is None and done["first_break"]:
            final.first_break = Break(**done["first_break"])
        if final.first_break is None:
            final.last_seq, final.last_hash = done["last_seq"], done["last_hash"]
    return final


def _fresh_connections() -> None:
    """In a forked child: drop (without closing) the parent's database connections; open new ones."""
    from django.db import connections

    for conn in connections.all(initialized_only=True):
        conn.connection = None
