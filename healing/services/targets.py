"""Targets: registration, settings, storm mode, the circuit breaker and change freezes."""


from __future__ import annotations

import logging
import os
from typing import Any

from django.utils import timezone
from django.utils.text import slugify

from compliance.actions import Action
from compliance.actors import Actor
from compliance.services import audit_append, audited_transaction
from healing.access import require
from healing.choices import (
    Kind,
)
from healing.models import (
    CacheTarget,
    ChangeFreeze,
)
from healing.services.base import HealingError, _conf, _target_snapshot, scope_of

log = logging.getLogger(__name__)


def target_create(
    *,
    actor: Any,
    name: str,
    location: str,
    kind: str = Kind.AICACHE_FS,
    labels: list[str] | None = None,
    description: str = "",
    check_interval_seconds: int | None = None,
    byte_budget: int | None = None,
    options: dict[str, Any] | None = None,
    is_demo: bool = False,
    allowed_models: list[str] | None = None,
) -> CacheTarget:
    name = name.strip()
    if not name or slugify(name) != name:
        raise HealingError(f"target name {name!r} must be a slug: lower-case letters, digits, '-' or '_'")
    if kind not in Kind.values:
        raise HealingError(f"unknown kind {kind!r}; choose one of {', '.join(Kind.values)}")
    location, sealed = _normalise_location(kind, location)
    if byte_budget is not None and byte_budget <= 0:
        raise HealingError("byte budget must be a positive number of bytes")
    interval = check_interval_seconds or _conf("DEFAULT_CHECK_INTERVAL_SECONDS")
    if interval < 5:
        raise HealingError("check interval must be at least 5 seconds")
    with audited_transaction():
        if CacheTarget.objects.filter(name=name).exists():
            raise HealingError(f"a target named {name!r} already exists")
        target = CacheTarget.objects.create(
            name=name,
            kind=kind,
            location=location,
            secret=sealed,
            labels=list(labels or []),
            description=description,
            check_interval_seconds=interval,
            byte_budget=byte_budget,
            options=dict(options or {}),
            allowed_models=list(allowed_models or []),
            is_demo=is_demo,
            next_check_at=timezone.now(),
        )
        audit_append(actor=actor, action=Action.TARGET_CREATED, object_type="target", object_id=target.pk,
                     scope=scope_of(target), summary=f"target {name} ({kind}) at {location}", after=_target_snapshot(target))
    return target


def _normalise_location(kind: str, location: str) -> tuple[str, str]:
    """The location as stored (paths absolute, a URL's password masked) and the sealed password."""
    from urllib.parse import urlsplit

    from healing.vault import VaultError, seal, split_url_password

    location = (location or "").strip()
    if not location:
        raise HealingError("a location is required (a directory, a file or a URL)")
    if kind in (Kind.AICACHE_FS, Kind.SQLITE):
        return os.path.abspath(os.path.expanduser(location)), ""
    try:
        parts = urlsplit(location)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise HealingError(f"not a valid Redis URL: {exc}") from exc
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise HealingError("a Redis target needs a URL such as redis://[:password@]host:6379/0 (rediss:// for TLS, unix:///path.sock)")
    if parts.scheme != "unix" and not parts.hostname:
        raise HealingError("the Redis URL names no host")
    masked, password = split_url_password(location)
    try:
        return masked, seal(password)
    except VaultError as exc:
        raise HealingError(str(exc)) from exc


def target_update(*, actor: Any, target_id: int, **changes: Any) -> CacheTarget:
    allowed = {"labels", "enabled", "check_interval_seconds", "byte_budget", "options", "description", "location", "allowed_models"}
    unknown = set(changes) - allowed
    if unknown:
        raise HealingError(f"cannot change {', '.join(sorted(unknown))} of a target")
    with audited_transaction():
        target = CacheTarget.objects.select_for_update().get(pk=target_id)
        before = _target_snapshot(target)
        if "location" in changes:
            changes["location"], sealed = _normalise_location(target.kind, changes["location"])
            if sealed or "****@" not in changes["location"]:
                target.secret = sealed
        for key, value in changes.items():
            setattr(target, key, value)
        target.save()
        audit_append(actor=actor, action=Action.TARGET_UPDATED, object_type="target", object_id=target.pk,
                     scope=scope_of(target), summary=f"target {target.name} updated", before=before, after=_target_snapshot(target))
    return target


def target_enter_storm(*, target: CacheTarget, reason: str) -> None:
    with audited_transaction():
        updated = CacheTarget.objects.filter(pk=target.pk, storm_mode=False).update(storm_mode=True, storm_reason=reason[:300])
        if updated:
            target.storm_mode, target.storm_reason = True, reason[:300]
            audit_append(actor=Actor.system("diagnosis"), action=Action.TARGET_STORM_ENTERED, object_type="target", object_id=target.pk,
                         scope=scope_of(target), summary=f"storm mode on {target.name}: automation stopped", after={"reason": reason})
            log.warning("storm mode entered", extra={"target": target.name, "reason": reason})


def target_clear_storm(*, actor: Any, target_id: int, comment: str = "") -> CacheTarget:
    with audited_transaction():
        target = CacheTarget.objects.select_for_update().get(pk=target_id)
        if not target.storm_mode:
            raise HealingError(f"{target.name} is not in storm mode")
        before = {"storm_mode": True, "storm_reason": target.storm_reason}
        target.storm_mode, target.storm_reason = False, ""
        target.save(update_fields=["storm_mode", "storm_reason"])
        audit_append(actor=actor, action=Action.TARGET_STORM_CLEARED, object_type="target", object_id=target.pk,
                     scope=scope_of(target), summary=f"storm mode cleared on {target.name}", before=before, after={"storm_mode": False, "comment": comment})
    return target

def target_reset_breaker(*, actor: Any, target_id: int, comment: str) -> CacheTarget:
    require(actor, "reset_breaker")
    if not comment.strip():
        raise HealingError("resetting the circuit breaker needs a comment saying what was fixed")
    with audited_transaction():
        target = CacheTarget.objects.select_for_update().get(pk=target_id)
        if not target.breaker_tripped:
            raise HealingError(f"the circuit breaker of {target.name} is not tripped")
        before = {"breaker_tripped": True, "breaker_reason": target.breaker_reason}
        target.breaker_tripped, target.breaker_reason = False, ""
        target.save(update_fields=["breaker_tripped", "breaker_reason"])
        audit_append(actor=actor, action=Action.TARGET_BREAKER_RESET, object_type="target", object_id=target.pk, scope=scope_of(target),
                     summary=f"circuit breaker reset on {target.name}", before=before, after={"breaker_tripped": False, "comment": comment})
    return target


def change_freeze_create(*, actor: Any, label: str, starts_at, ends_at, reason: str) -> ChangeFreeze:
    require(actor, "admin")
    if ends_at <= starts_at:
        raise HealingError("a change freeze must end after it starts")
    if not reason.strip():
        raise HealingError("a change freeze needs a reason")
    with audited_transaction():
        freeze = ChangeFreeze.objects.create(label=label, starts_at=starts_at, ends_at=ends_at, reason=reason, created_by=actor)
        audit_append(actor=actor, action=Action.FREEZE_CREATED, object_type="freeze", object_id=freeze.pk,
                     summary=f"change freeze on {label} from {starts_at:%Y-%m-%d %H:%M} to {ends_at:%Y-%m-%d %H:%M}",
                     after={"label": label, "starts_at": starts_at.isoformat(), "ends_at": ends_at.isoformat(), "reason": reason})
    return freeze
