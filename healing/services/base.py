"""Shared pieces of the services: the refusal type, settings, scopes, target config, leases, repair status changes."""


from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from compliance.services import audit_append, canonical_json
from healing.backends import TargetConfig
from healing.models import (
    CacheTarget,
    Repair,
)

log = logging.getLogger(__name__)


class HealingError(Exception):
    """A refusal or failure with a message meant for the person who asked."""


def _conf(key: str) -> Any:
    return settings.HEALING[key]


def scope_of(target: CacheTarget | int) -> str:
    return f"target:{target if isinstance(target, int) else target.pk}"


def target_config(target: CacheTarget, *, full_speed: bool = False) -> TargetConfig:
    from healing.vault import join_url_password, unseal

    return TargetConfig(
        id=target.pk,
        name=target.name,
        kind=target.kind,
        location=join_url_password(target.location, unseal(target.secret)) if target.secret else target.location,
        byte_budget=target.byte_budget,
        allowed_models=tuple(target.allowed_models or ()),
        grace_seconds=float(target.option("grace_seconds", _conf("GRACE_SECONDS"))),
        future_tolerance_seconds=float(target.option("future_tolerance_seconds", _conf("FUTURE_TOLERANCE_SECONDS"))),
        max_entry_bytes=int(_conf("MAX_ENTRY_BYTES")),
        max_index_bytes=int(_conf("MAX_INDEX_BYTES")),
        latency_sample_size=int(_conf("LATENCY_SAMPLE_SIZE")),
        state_path=Path(_conf("STATE_DIR")) / f"target-{target.pk}.state",
        scan_processes=int(_conf("SCAN_PROCESSES")),
        parallel_min_entries=int(_conf("SCAN_PARALLEL_MIN_ENTRIES")),
        options=dict(target.options or {}),
        full_speed=full_speed,
    )


def _target_snapshot(target: CacheTarget) -> dict[str, Any]:
    return {
        "name": target.name,
        "kind": target.kind,
        "location": target.location,
        "labels": target.labels,
        "enabled": target.enabled,
        "check_interval_seconds": target.check_interval_seconds,
        "byte_budget": target.byte_budget,
        "allowed_models": target.allowed_models,
        "options": target.options,
        "storm_mode": target.storm_mode,
    }


def target_lease_acquire(*, target_id: int, owner: str, seconds: int | None = None) -> bool:
    """Take the target's lease (a conditional update): only one pass or repair works on a store at once."""
    now = timezone.now()
    until = now + timedelta(seconds=seconds or _conf("TARGET_LEASE_SECONDS"))
    free = Q(lease_until__isnull=True) | Q(lease_until__lt=now) | Q(lease_owner=owner)
    return CacheTarget.objects.filter(free, pk=target_id).update(lease_owner=owner, lease_until=until) == 1


def target_lease_release(*, target_id: int, owner: str) -> None:
    CacheTarget.objects.filter(pk=target_id, lease_owner=owner).update(lease_owner="", lease_until=None)


@contextmanager
def lease_heartbeat(*, target_id: int, owner: str) -> Iterator[None]:
    """Keep renewing a held lease while long work runs, so that only a dead worker's lease lapses."""
    seconds = int(_conf("TARGET_LEASE_SECONDS"))
    stop = threading.Event()

    def beat() -> None:
        from django.db import connection

        try:
            while not stop.wait(max(1.0, seconds / 3)):
                CacheTarget.objects.filter(pk=target_id, lease_owner=owner).update(lease_until=timezone.now() + timedelta(seconds=seconds))
        finally:
            connection.close()

    thread = threading.Thread(target=beat, name=f"lease-{target_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


def _plan_hash(plan: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(plan).encode()).hexdigest()


def _set_repair_status(repair: Repair, status: str, *, actor: Any, action: str, summary: str, after: dict | None = None, **fields: Any) -> None:
    before = {"status": repair.status}
    repair.status = status
    for key, value in fields.items():
        setattr(repair, key, value)
    repair.save(update_fields=["status", *fields])
    audit_append(actor=actor, action=action, object_type="repair", object_id=repair.pk, scope=scope_of(repair.target_id),
                 summary=summary, before=before, after={"status": status, "action": repair.action, **(after or {})})
