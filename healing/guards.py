"""Reads that decide whether a repair may run now: change freezes, the automation rate limit and
the circuit breaker. No writes here; services act on what these say."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from healing.choices import ApprovalDecision, RepairStatus
from healing.models import Approval, CacheTarget, ChangeFreeze, Repair


def _conf(key: str):
    return settings.HEALING[key]


def active_freeze(target: CacheTarget, at=None) -> ChangeFreeze | None:
    at = at or timezone.now()
    labels = list(target.labels or []) + ["*"]
    return ChangeFreeze.objects.filter(label__in=labels, starts_at__lte=at, ends_at__gt=at).order_by("ends_at").last()


def freeze_message(freeze: ChangeFreeze) -> str:
    return (f"change freeze on “{freeze.label}” until {freeze.ends_at:%Y-%m-%d %H:%M} UTC ({freeze.reason}); "
            "only an admin can run a repair now, through break-glass with a justification")


def automated_repairs_last_hour(target: CacheTarget) -> int:
    since = timezone.now() - timedelta(hours=1)
    return Approval.objects.filter(repair__target=target, user__isnull=True, decision=ApprovalDecision.APPROVE, created_at__gte=since).count()


def automation_limit(target: CacheTarget) -> int:
    return int(target.option("auto_repairs_per_hour", _conf("AUTO_REPAIRS_PER_HOUR")))


def recent_failed_verifications(target: CacheTarget) -> int:
    since = timezone.now() - timedelta(seconds=int(_conf("BREAKER_WINDOW_SECONDS")))
    return Repair.objects.filter(
        Q(status=RepairStatus.ROLLED_BACK) | Q(status=RepairStatus.FAILED), target=target, finished_at__gte=since, emergency=False
    ).exclude(error="").count()


def approval_ttl() -> timedelta:
    return timedelta(seconds=int(_conf("APPROVAL_TTL_SECONDS")))
