"""Thin Celery tasks: they take ids, call one service, and are safe to run twice."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from compliance.context import audit_context
from healing import services
from healing.choices import RepairStatus
from healing.logctx import log_context
from healing.models import CacheTarget, Repair

log = logging.getLogger(__name__)


@shared_task(name="healing.tasks.dispatch_due_checks", ignore_result=True)
def dispatch_due_checks() -> int:
    """Beat calls this every few seconds: enqueue a pass for every target whose interval has elapsed,
    and re-enqueue approved repairs whose message was lost."""
    now = timezone.now()
    due = list(CacheTarget.objects.filter(Q(next_check_at__isnull=True) | Q(next_check_at__lte=now), enabled=True).values_list("pk", "check_interval_seconds"))
    dispatched = 0
    for target_id, interval in due:
        # claim the slot with a conditional update so two beat ticks never enqueue the same pass twice
        claimed = CacheTarget.objects.filter(Q(next_check_at__isnull=True) | Q(next_check_at__lte=now), pk=target_id).update(
            next_check_at=now + timedelta(seconds=interval))
        if claimed:
            run_target_pass.delay(target_id, "schedule")
            dispatched += 1
    services.approvals_sweep()
    stuck = Repair.objects.filter(status=RepairStatus.APPROVED, approved_at__lt=now - timedelta(seconds=60)).values_list("pk", flat=True)[:50]
    for repair_id in stuck:
        execute_repair.delay(repair_id)
    for repair_id in services.interrupted_repairs():
        recover_repair.delay(repair_id)
    return dispatched


@shared_task(name="healing.tasks.run_target_pass", ignore_result=True)
def run_target_pass(target_id: int, trigger: str = "schedule") -> str:
    with audit_context(request_id=f"task-pass-{target_id}-{timezone.now().timestamp():.0f}"), log_context(target=target_id):
        if not CacheTarget.objects.filter(pk=target_id).exists():
            return "gone"
        report = services.target_pass(target_id=target_id, trigger=trigger)
        log.info("pass finished", extra={"target": report.target, "state": report.state, "planned": len(report.planned)})
        return report.state


@shared_task(name="healing.tasks.execute_repair", bind=True, ignore_result=True, max_retries=120)
def execute_repair(self, repair_id: int) -> str:
    if not Repair.objects.filter(pk=repair_id).exists():
        return "gone"  # a message outlived its repair (a restored database): nothing to do
    with audit_context(request_id=f"task-repair-{repair_id}"), log_context(repair=repair_id):
        outcome = services.repair_execute(repair_id=repair_id)
    if outcome.state == "busy":
        # a check or another repair holds the target: come back shortly
        raise self.retry(countdown=3)
    return outcome.state


def enqueue_pass(target_id: int, trigger: str = "manual") -> None:
    transaction.on_commit(lambda: run_target_pass.delay(target_id, trigger))


@shared_task(name="healing.tasks.recover_repair", ignore_result=True)
def recover_repair(repair_id: int) -> str:
    if not Repair.objects.filter(pk=repair_id).exists():
        return "gone"
    with audit_context(request_id=f"task-recover-{repair_id}"):
        repair = services.repair_recover(repair_id=repair_id)
    return "recovered" if repair else "not_needed"


@shared_task(name="healing.tasks.deliver_notification", bind=True, ignore_result=True, max_retries=5)
def deliver_notification(self, notification_id: int) -> str:
    from healing.notify import deliver

    if not deliver(notification_id):
        raise self.retry(countdown=30)
    return "delivered"
