"""Repairs: plan (dry run), the policy gate, approvals, execution with verification, rollback, and the
workflow around them: break-glass, reviews, retries, expiry, recovery of interrupted repairs."""


from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from compliance.actions import Action
from compliance.actors import Actor
from compliance.services import audit_append, audited_transaction
from healing.access import require
from healing.backends import BackendError, backend_for
from healing.catalog import CHECKS
from healing.choices import (
    OPEN_REPAIR_STATUSES,
    ApprovalDecision,
    IssueStatus,
    NotificationEvent,
    PolicyDecision,
    RepairStatus,
    Risk,
)
from healing.guards import (
    active_freeze,
    approval_ttl,
    automated_repairs_last_hour,
    automation_limit,
    freeze_message,
    recent_failed_verifications,
)
from healing.models import (
    Approval,
    CacheTarget,
    Issue,
    Repair,
    RepairPolicy,
    RetroactiveReview,
)
from healing.notify import notify
from healing.services.base import HealingError, _conf, _plan_hash, _set_repair_status, lease_heartbeat, scope_of, target_config, target_lease_acquire, target_lease_release
from healing.services.checking import CheckReport, check_target, issue_subjects

log = logging.getLogger(__name__)


def policy_match(*, target: CacheTarget, code: str, action: str, risk: str, blast_entries: int, blast_bytes: int) -> RepairPolicy | None:
    for policy in RepairPolicy.objects.filter(enabled=True).order_by("order", "id"):
        if policy.match_labels and not set(policy.match_labels) & set(target.labels or []):
            continue
        if policy.match_checks and code not in policy.match_checks:
            continue
        if policy.match_actions and action not in policy.match_actions:
            continue
        if policy.match_risks and risk not in policy.match_risks:
            continue
        if policy.max_blast_entries is not None and blast_entries > policy.max_blast_entries:
            continue
        if policy.max_blast_bytes is not None and blast_bytes > policy.max_blast_bytes:
            continue
        return policy
    return None


def _automation_blocker(target: CacheTarget) -> str | None:
    """Why automation may not approve a repair on this target right now (None when it may)."""
    if target.storm_mode:
        return f"storm mode on {target.name}: automation stopped"
    if target.breaker_tripped:
        return f"circuit breaker tripped on {target.name}: every repair needs a human until an admin resets it"
    freeze = active_freeze(target)
    if freeze:
        return freeze_message(freeze)
    done, limit = automated_repairs_last_hour(target), automation_limit(target)
    if done >= limit:
        return f"rate limit: {done} automated repairs on {target.name} in the last hour (limit {limit})"
    return None


def _gate(repair: Repair, target: CacheTarget, *, enqueue: bool) -> None:
    """The policy gate: auto-approve, wait for approvers, or forbid."""
    policy = policy_match(target=target, code=repair.code, action=repair.action, risk=repair.risk,
                          blast_entries=repair.blast_entries, blast_bytes=repair.blast_bytes)
    repair.policy, repair.policy_version = policy, policy.version if policy else None
    repair.save(update_fields=["policy", "policy_version"])
    policy_actor = Actor.policy(policy.pk, policy.name, policy.version) if policy else Actor.system("policy-default")
    if policy is not None and policy.decision == PolicyDecision.FORBID:
        _set_repair_status(repair, RepairStatus.FORBIDDEN, actor=policy_actor, action=Action.REPAIR_GATED,
                           summary=f"forbidden by policy {policy.name} v{policy.version}", gate_reason=f"forbidden by policy “{policy.name}”")
        return
    blocker = _automation_blocker(target) if policy is not None and policy.decision == PolicyDecision.AUTO else None
    if policy is not None and policy.decision == PolicyDecision.AUTO and blocker is None:
        now = timezone.now()
        Approval.objects.create(repair=repair, decision=ApprovalDecision.APPROVE, policy=policy, policy_version=policy.version,
                                plan_hash=repair.plan_hash, comment="auto-approved by policy", created_at=now, expires_at=now + approval_ttl())
        _set_repair_status(repair, RepairStatus.APPROVED, actor=policy_actor, action=Action.REPAIR_APPROVED,
                           summary=f"auto-approved by policy {policy.name} v{policy.version}",
                           after={"plan_hash": repair.plan_hash, "policy": policy.name, "policy_version": policy.version},
                           approved_at=now, gate_reason=f"auto-approved by policy “{policy.name}” v{policy.version}")
        if enqueue:
            _enqueue_execute(repair.pk)
        return
    required = max(1, policy.approvers_required if policy else (2 if repair.risk == Risk.CRITICAL else 1))
    reason = blocker or (f"policy “{policy.name}” v{policy.version} requires {required} approver(s)" if policy else f"no policy matched; {required} approver(s) required")
    _set_repair_status(repair, RepairStatus.AWAITING_APPROVAL, actor=policy_actor, action=Action.REPAIR_GATED, summary=reason,
                       after={"approvals_required": required, "policy": policy.name if policy else None,
                              "policy_version": policy.version if policy else None}, approvals_required=required, gate_reason=reason[:300])
    notify(event=NotificationEvent.AWAITING_APPROVAL, target=target,
           text=f"Repair #{repair.pk} ({repair.action}, {repair.risk} risk, {repair.blast_entries} entries) on {target.name} awaits approval: {reason}",
           payload={"repair": repair.pk, "url": f"{_conf('BASE_URL')}/repairs/{repair.pk}/"})


def _enqueue_execute(repair_id: int) -> None:
    from healing import tasks

    transaction.on_commit(lambda: tasks.execute_repair.delay(repair_id))


def repair_plan(*, target: CacheTarget, issue: Issue, subjects: list[str], actor: Any = None, enqueue: bool = True) -> Repair | None:
    """Dry-run a repair for an issue's subjects and send it through the policy gate."""
    spec = CHECKS[issue.code]
    if spec.repair is None or not subjects:
        return None
    backend = backend_for(target_config(target))
    draft = backend.plan(issue.code, subjects)
    if not draft.operations:
        return None
    plan = {
        "target": target.location,
        "code": issue.code,
        "action": draft.action,
        "risk": draft.risk,
        "summary": draft.summary,
        "operations": draft.operations,
        "skipped": draft.skipped,
        "subjects_digest": hashlib.sha256("\n".join(sorted(subjects)).encode()).hexdigest(),
    }
    with audited_transaction():
        repair = Repair.objects.create(
            target=target, issue=issue, code=issue.code, action=draft.action, risk=draft.risk,
            status=RepairStatus.AWAITING_APPROVAL, plan=plan, plan_hash=_plan_hash(plan),
            blast_entries=draft.blast_entries, blast_bytes=draft.blast_bytes,
            requested_by=actor if getattr(actor, "is_authenticated", False) else None, created_at=timezone.now(),
        )
        audit_append(actor=actor or Actor.system("planner"), action=Action.REPAIR_PLANNED, object_type="repair", object_id=repair.pk, scope=scope_of(target),
                     summary=f"{draft.action} planned for {issue.code}: {draft.blast_entries} entr(ies), {draft.blast_bytes} bytes",
                     after={"issue": issue.pk, "code": issue.code, "action": draft.action, "risk": draft.risk, "plan_hash": repair.plan_hash,
                            "blast_entries": draft.blast_entries, "blast_bytes": draft.blast_bytes,
                            "operations": len(draft.operations), "dry_run": draft.operations[:20]})
        _gate(repair, target, enqueue=enqueue)
    return repair


def _plan_for_issues(target: CacheTarget, report: CheckReport, *, enqueue: bool) -> list[Repair]:
    planned = []
    for issue in report.issues:
        if CHECKS[issue.code].repair is None or issue.status == IssueStatus.RESOLVED:
            continue
        subjects = sorted(f.subject for f in report.grouped.get(issue.code, []))
        digest = hashlib.sha256("\n".join(subjects).encode()).hexdigest()
        open_repairs = list(Repair.objects.filter(issue=issue, status__in=OPEN_REPAIR_STATUSES))
        if any(r.status != RepairStatus.AWAITING_APPROVAL or r.plan.get("subjects_digest") == digest for r in open_repairs):
            continue  # already planned on these subjects, or already on its way
        with audited_transaction():
            for old in open_repairs:
                _set_repair_status(old, RepairStatus.SUPERSEDED, actor=Actor.system("planner"), action=Action.REPAIR_SUPERSEDED,
                                   summary="re-planned: the issue's subjects changed")
        try:
            repair = repair_plan(target=target, issue=issue, subjects=subjects, enqueue=enqueue)
        except BackendError as exc:
            log.warning("cannot plan a repair", extra={"target": target.name, "code": issue.code, "reason": str(exc)})
            continue
        if repair:
            planned.append(repair)
    return planned


def _valid_approvals(repair: Repair, now=None):
    now = now or timezone.now()
    return repair.approvals.filter(decision=ApprovalDecision.APPROVE, plan_hash=repair.plan_hash).filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))


def repair_approve(*, actor: Any, repair_id: int, comment: str = "") -> Repair:
    require(actor, "approve")
    with audited_transaction():
        repair = Repair.objects.select_for_update().select_related("target").get(pk=repair_id)
        if repair.status != RepairStatus.AWAITING_APPROVAL:
            raise HealingError(f"repair #{repair.pk} is {repair.get_status_display().lower()}; only a repair awaiting approval can be approved")
        if repair.requested_by_id and repair.requested_by_id == actor.pk and repair.risk != Risk.LOW:
            raise HealingError("you requested this repair, so someone else must approve it (separation of duties)")
        if repair.approvals.filter(user=actor).exists():
            raise HealingError("you have already approved this repair; it needs a different approver")
        freeze = active_freeze(repair.target)
        if freeze:
            raise HealingError(f"cannot approve: {freeze_message(freeze)}")
        now = timezone.now()
        Approval.objects.create(repair=repair, decision=ApprovalDecision.APPROVE, user=actor, plan_hash=repair.plan_hash,
                                comment=comment, created_at=now, expires_at=now + approval_ttl())
        count = _valid_approvals(repair, now).count()
        if count >= repair.approvals_required:
            _set_repair_status(repair, RepairStatus.APPROVED, actor=actor, action=Action.REPAIR_APPROVED,
                               summary=f"approved by {actor.get_username()} ({count}/{repair.approvals_required})",
                               after={"plan_hash": repair.plan_hash, "comment": comment, "approvals": count,
                                      "approvers": list(_valid_approvals(repair, now).values_list("user__username", flat=True))},
                               approved_at=now)
            _enqueue_execute(repair.pk)
        else:
            audit_append(actor=actor, action=Action.REPAIR_APPROVED, object_type="repair", object_id=repair.pk, scope=scope_of(repair.target_id),
                         summary=f"approval {count}/{repair.approvals_required} by {actor.get_username()}",
                         after={"plan_hash": repair.plan_hash, "comment": comment, "approvals": count, "status": repair.status})
    return repair


def repair_reject(*, actor: Any, repair_id: int, comment: str) -> Repair:
    require(actor, "approve")
    if not comment.strip():
        raise HealingError("a rejection needs a comment saying why")
    with audited_transaction():
        repair = Repair.objects.select_for_update().get(pk=repair_id)
        if repair.status != RepairStatus.AWAITING_APPROVAL:
            raise HealingError(f"repair #{repair.pk} is {repair.get_status_display().lower()}; only a repair awaiting approval can be rejected")
        Approval.objects.create(repair=repair, decision=ApprovalDecision.REJECT, user=actor, plan_hash=repair.plan_hash, comment=comment, created_at=timezone.now())
        _set_repair_status(repair, RepairStatus.REJECTED, actor=actor, action=Action.REPAIR_REJECTED,
                           summary=f"rejected by {actor.get_username()}", after={"comment": comment}, finished_at=timezone.now())
    return repair


def _workdir(repair: Repair, token: str) -> Path:
    # the claim token makes it unique even if ids are ever reused (a restored database, a test run)
    return Path(_conf("QUARANTINE_DIR")) / f"target-{repair.target_id}" / f"repair-{repair.pk}-{token[:12]}"


def _approval_binds(repair: Repair) -> bool:
    """The approvals still in force were given on exactly this plan, and there are enough of them."""
    if _plan_hash(repair.plan) != repair.plan_hash:
        return False
    if repair.approvals.filter(decision=ApprovalDecision.APPROVE).exclude(plan_hash=repair.plan_hash).exists():
        return False
    return _valid_approvals(repair).count() >= max(1, repair.approvals_required)


@dataclass
class ExecuteOutcome:
    repair: Repair | None
    state: str  # done | busy | not_runnable


def repair_execute(*, repair_id: int, run_check_after: bool = True) -> ExecuteOutcome:
    """Execute an approved repair exactly once: claim, apply with a journal, verify, close or roll back."""
    repair = Repair.objects.select_related("target").get(pk=repair_id)
    if repair.status != RepairStatus.APPROVED:
        return ExecuteOutcome(repair, "not_runnable")
    target = repair.target
    if not repair.emergency and repair.approved_at and repair.approved_at + approval_ttl() < timezone.now():
        _expire(repair)
        return ExecuteOutcome(repair, "expired")
    if not repair.emergency and active_freeze(target):
        return ExecuteOutcome(repair, "frozen")  # stays approved; runs after the window if still in force
    token = uuid.uuid4().hex
    owner = f"repair:{repair.pk}:{token}"
    if not target_lease_acquire(target_id=target.pk, owner=owner):
        return ExecuteOutcome(repair, "busy")
    try:
        with audited_transaction():
            claimed = Repair.objects.filter(pk=repair.pk, status=RepairStatus.APPROVED).update(
                status=RepairStatus.RUNNING, claim_token=token, started_at=timezone.now(), workdir=str(_workdir(repair, token)))
            if not claimed:
                return ExecuteOutcome(repair, "not_runnable")
            repair.refresh_from_db()
            audit_append(actor=Actor.system("executor"), action=Action.REPAIR_STARTED, object_type="repair", object_id=repair.pk,
                         scope=scope_of(target), summary=f"{repair.action} started", before={"status": RepairStatus.APPROVED},
                         after={"status": RepairStatus.RUNNING, "plan_hash": repair.plan_hash, "workdir": repair.workdir})
        with lease_heartbeat(target_id=target.pk, owner=owner):
            _run_claimed(repair, target)
        if run_check_after and repair.status == RepairStatus.SUCCEEDED:
            check_target(target_id=target.pk, trigger="after_repair")
        return ExecuteOutcome(repair, "done")
    finally:
        target_lease_release(target_id=target.pk, owner=owner)


def _run_claimed(repair: Repair, target: CacheTarget) -> None:
    executor = Actor.system("executor")
    if not _approval_binds(repair):
        with audited_transaction():
            _set_repair_status(repair, RepairStatus.FAILED, actor=executor, action=Action.REPAIR_FAILED,
                               summary="refused: the approval does not match the plan", finished_at=timezone.now(),
                               error="the approvals in force do not match this plan (hash, expiry or approver count); nothing was changed")
        return
    backend = backend_for(target_config(target))
    workdir = Path(repair.workdir)
    subjects = [op["subject"] for op in repair.plan["operations"]]
    try:
        baseline = {(f.code, f.subject) for f in backend.recheck(subjects)}
        result = backend.apply(repair.plan, workdir)
    except Exception as exc:
        log.exception("repair failed while applying", extra={"repair": repair.pk, "target": target.name})
        rolled = _safe_rollback(backend, workdir)
        if "error" in rolled:
            _defer_rollback(repair, actor=executor, why=f"failed while applying: {exc}", rolled=rolled)
            return
        with audited_transaction():
            _set_repair_status(repair, RepairStatus.ROLLED_BACK, actor=executor, action=Action.REPAIR_FAILED,
                               summary=f"failed while applying: {exc}; rolled back", finished_at=timezone.now(),
                               error=f"{exc.__class__.__name__}: {exc}", result={"rollback": rolled}, after={"rollback": rolled})
            _after_failure(repair, target)
        return
    applied_subjects = [a["subject"] for a in result.applied]
    with audited_transaction():
        repair.result = {"applied": result.applied, "skipped": result.skipped}
        repair.save(update_fields=["result"])
        audit_append(actor=executor, action=Action.REPAIR_APPLIED, object_type="repair", object_id=repair.pk, scope=scope_of(target),
                     summary=f"{len(result.applied)} applied, {len(result.skipped)} skipped",
                     after={"applied": len(result.applied), "skipped": result.skipped[:50], "manifest": str(workdir / "manifest.json")})
    if not applied_subjects:
        with audited_transaction():
            _set_repair_status(repair, RepairStatus.SUPERSEDED, actor=executor, action=Action.REPAIR_SUPERSEDED,
                               summary="nothing applied: every subject changed after planning; the next pass re-plans",
                               finished_at=timezone.now())
        return
    after = backend.recheck(applied_subjects)
    remaining = [f.subject for f in after if f.code == repair.code]
    new = [f"{f.code}:{f.subject}" for f in after if (f.code, f.subject) not in baseline]
    passed = not remaining and not new
    verification = {"passed": passed, "checked": len(applied_subjects), "still_failing": remaining[:50], "new_findings": new[:50]}
    with audited_transaction():
        audit_append(actor=executor, action=Action.REPAIR_VERIFIED, object_type="repair", object_id=repair.pk, scope=scope_of(target),
                     summary="verification passed" if passed else "verification failed", after=verification)
        if passed:
            _set_repair_status(repair, RepairStatus.SUCCEEDED, actor=executor, action=Action.REPAIR_SUCCEEDED,
                               summary=f"{repair.action}: {len(applied_subjects)} subject(s) repaired and verified",
                               after={"verification": verification}, verification=verification, finished_at=timezone.now())
            return
    rolled = _safe_rollback(backend, workdir)
    if "error" in rolled:
        _defer_rollback(repair, actor=executor, why="verification failed", rolled=rolled)
        return
    with audited_transaction():
        _set_repair_status(repair, RepairStatus.ROLLED_BACK, actor=executor, action=Action.REPAIR_ROLLED_BACK,
                           summary="verification failed; rolled back automatically",
                           after={"verification": verification, "rollback": rolled}, verification=verification,
                           finished_at=timezone.now(), error="verification failed: the issue still reproduces or something new appeared")
        _after_failure(repair, target)


def _defer_rollback(repair: Repair, *, actor: Any, why: str, rolled: dict[str, Any]) -> None:
    """The rollback itself failed (the store went away): the repair stays running with its journal, and
    the recovery sweep finishes the rollback once the store answers again. Nothing is left half-done
    without a record of what to undo."""
    with audited_transaction():
        repair.error = f"{why}; rollback pending ({rolled['error']}): it is retried until the store answers"
        repair.save(update_fields=["error"])
        audit_append(actor=actor, action=Action.REPAIR_FAILED, object_type="repair", object_id=repair.pk, scope=scope_of(repair.target_id),
                     summary=repair.error[:300], after={"status": repair.status, "rollback": rolled})


def _safe_rollback(backend: Any, workdir: Path) -> dict[str, Any]:
    try:
        outcome = backend.rollback(workdir)
        return {"restored": len(outcome["restored"]), "superseded": outcome["superseded"][:50]}
    except Exception as exc:  # keep the journal for a person; never lose the quarantine
        log.exception("rollback failed", extra={"workdir": str(workdir)})
        return {"error": f"{exc.__class__.__name__}: {exc}", "journal": str(workdir / "journal.jsonl")}


def repair_rollback(*, actor: Any, repair_id: int, reason: str = "") -> Repair:
    """Undo a succeeded repair from its quarantine manifest, byte-for-byte."""
    repair = Repair.objects.select_related("target").get(pk=repair_id)
    if actor is not None:
        require(actor, "operate")
    if repair.status != RepairStatus.SUCCEEDED:
        raise HealingError(f"repair #{repair.pk} is {repair.get_status_display().lower()}; only a succeeded repair can be rolled back")
    owner = f"rollback:{repair.pk}:{uuid.uuid4().hex}"
    if not target_lease_acquire(target_id=repair.target_id, owner=owner):
        raise HealingError(f"{repair.target.name} is busy with a check or another repair; try again in a moment")
    try:
        with audited_transaction():
            if not Repair.objects.filter(pk=repair.pk, status=RepairStatus.SUCCEEDED).update(status=RepairStatus.RUNNING):
                raise HealingError(f"repair #{repair.pk} is already being rolled back")
            repair.refresh_from_db()
            audit_append(actor=actor, action=Action.REPAIR_ROLLBACK_REQUESTED, object_type="repair", object_id=repair.pk,
                         scope=scope_of(repair.target_id), summary=f"rollback requested: {reason}" if reason else "rollback requested",
                         before={"status": RepairStatus.SUCCEEDED}, after={"status": RepairStatus.RUNNING, "reason": reason})
        backend = backend_for(target_config(repair.target))
        try:
            outcome = backend.rollback(Path(repair.workdir))
        except Exception as exc:
            log.exception("rollback failed", extra={"repair": repair.pk})
            _defer_rollback(repair, actor=actor, why="rollback requested", rolled={"error": f"{exc.__class__.__name__}: {exc}"})
            raise HealingError(f"the rollback of repair #{repair.pk} could not finish ({exc}); it stays pending and is retried automatically") from exc
        with audited_transaction():
            _set_repair_status(repair, RepairStatus.ROLLED_BACK, actor=actor, action=Action.REPAIR_ROLLED_BACK,
                               summary=f"rolled back: {len(outcome['restored'])} restored, {len(outcome['superseded'])} superseded by newer client writes",
                               after={"restored": outcome["restored"][:50], "superseded": outcome["superseded"][:50]}, finished_at=timezone.now())
    finally:
        target_lease_release(target_id=repair.target_id, owner=owner)
    return repair


def _after_failure(repair: Repair, target: CacheTarget) -> None:
    """A repair failed or was rolled back: tell people, and trip the breaker after repeated failures."""
    notify(event=NotificationEvent.REPAIR_FAILED, target=target,
           text=f"Repair #{repair.pk} ({repair.action}) on {target.name} {repair.get_status_display().lower()}: {repair.error}",
           payload={"repair": repair.pk, "status": repair.status})
    failures, limit = recent_failed_verifications(target), int(_conf("BREAKER_FAILURES"))
    if failures >= limit and not target.breaker_tripped:
        reason = f"{failures} failed repairs in the last {int(_conf('BREAKER_WINDOW_SECONDS')) // 60} minutes"
        if CacheTarget.objects.filter(pk=target.pk, breaker_tripped=False).update(breaker_tripped=True, breaker_reason=reason):
            target.breaker_tripped, target.breaker_reason = True, reason
            audit_append(actor=Actor.system("executor"), action=Action.TARGET_BREAKER_TRIPPED, object_type="target", object_id=target.pk,
                         scope=scope_of(target), summary=f"circuit breaker tripped on {target.name}: {reason}", after={"reason": reason})
            notify(event=NotificationEvent.BREAKER_TRIPPED, target=target,
                   text=f"Circuit breaker tripped on {target.name} ({reason}): every repair there now needs a human until an admin resets it.")

def repair_break_glass(*, actor: Any, repair_id: int, justification: str) -> Repair:
    """Emergency change: an admin runs a repair now, past a freeze and without the usual approvals.
    Demands a justification, flags the change as an emergency and opens a retroactive review."""
    require(actor, "break_glass")
    if len(justification.strip()) < 10:
        raise HealingError("break-glass needs a justification of at least 10 characters saying why this cannot wait")
    with audited_transaction():
        repair = Repair.objects.select_for_update().select_related("target").get(pk=repair_id)
        if repair.status not in {RepairStatus.AWAITING_APPROVAL, RepairStatus.APPROVED}:
            raise HealingError(f"repair #{repair.pk} is {repair.get_status_display().lower()}; break-glass applies to a repair waiting to run")
        now = timezone.now()
        due = now + timedelta(hours=float(_conf("REVIEW_DUE_HOURS")))
        if not repair.approvals.filter(user=actor).exists():
            Approval.objects.create(repair=repair, decision=ApprovalDecision.APPROVE, user=actor, plan_hash=repair.plan_hash,
                                    comment=f"BREAK-GLASS: {justification}", created_at=now, expires_at=now + approval_ttl())
        review = RetroactiveReview.objects.create(repair=repair, justification=justification, opened_by=actor, opened_at=now, due_at=due)
        _set_repair_status(repair, RepairStatus.APPROVED, actor=actor, action=Action.REPAIR_BREAK_GLASS,
                           summary=f"emergency change by {actor.get_username()}: {justification[:120]}",
                           after={"justification": justification, "plan_hash": repair.plan_hash, "review": review.pk, "review_due": due.isoformat()},
                           emergency=True, approved_at=now, approvals_required=1, gate_reason="break-glass (emergency change)")
        audit_append(actor=actor, action=Action.REVIEW_OPENED, object_type="review", object_id=review.pk, scope=scope_of(repair.target_id),
                     summary=f"retroactive review of repair #{repair.pk} due {due:%Y-%m-%d %H:%M}", after={"repair": repair.pk, "due_at": due.isoformat()})
        _enqueue_execute(repair.pk)
    return repair


def review_sign_off(*, actor: Any, review_id: int, comment: str) -> RetroactiveReview:
    require(actor, "approve")
    if not comment.strip():
        raise HealingError("a review sign-off needs a comment")
    with audited_transaction():
        review = RetroactiveReview.objects.select_for_update().select_related("repair").get(pk=review_id)
        if review.signed_off_at:
            raise HealingError(f"review #{review.pk} was already signed off by {review.signed_off_by}")
        if review.opened_by_id == actor.pk:
            raise HealingError("you broke the glass on this repair, so someone else must review it (separation of duties)")
        now = timezone.now()
        review.signed_off_by, review.signed_off_at, review.comment = actor, now, comment
        review.save(update_fields=["signed_off_by", "signed_off_at", "comment"])
        audit_append(actor=actor, action=Action.REVIEW_SIGNED_OFF, object_type="review", object_id=review.pk, scope=scope_of(review.repair.target_id),
                     summary=f"retroactive review of repair #{review.repair_id} signed off" + (" (late)" if now > review.due_at else ""),
                     after={"repair": review.repair_id, "comment": comment, "late": now > review.due_at})
    return review


def repair_retry(*, actor: Any, repair_id: int) -> Repair:
    """Plan the repair again from its issue's current subjects, requested by `actor` (so it cannot self-approve)."""
    require(actor, "operate")
    old = Repair.objects.select_related("target", "issue").get(pk=repair_id)
    if old.status not in {RepairStatus.FAILED, RepairStatus.ROLLED_BACK, RepairStatus.EXPIRED, RepairStatus.REJECTED, RepairStatus.SUPERSEDED}:
        raise HealingError(f"repair #{old.pk} is {old.get_status_display().lower()}; only a finished repair that did not succeed can be retried")
    if old.issue is None or old.issue.status == IssueStatus.RESOLVED:
        raise HealingError("the issue this repair was for is resolved: there is nothing to retry")
    if Repair.objects.filter(issue=old.issue, status__in=OPEN_REPAIR_STATUSES).exists():
        raise HealingError("a repair for this issue is already waiting or running")
    subjects = [row["subject"] for row in issue_subjects(old.issue)]
    new = repair_plan(target=old.target, issue=old.issue, subjects=subjects, actor=actor)
    if new is None:
        raise HealingError("nothing left to repair: the subjects are gone")
    with audited_transaction():
        audit_append(actor=actor, action=Action.REPAIR_RETRIED, object_type="repair", object_id=new.pk, scope=scope_of(old.target_id),
                     summary=f"retry of repair #{old.pk} as #{new.pk}", after={"previous": old.pk})
    return new


def repair_request(*, actor: Any, issue_id: int) -> Repair:
    """An operator asks for a repair of an issue: planned now, requested by them (so they cannot approve it)."""
    require(actor, "operate")
    issue = Issue.objects.select_related("target").get(pk=issue_id)
    if issue.status == IssueStatus.RESOLVED:
        raise HealingError(f"issue #{issue.pk} is resolved: there is nothing to repair")
    if CHECKS[issue.code].repair is None:
        raise HealingError(f"{issue.code} has no automatic repair: it is for a person to act on")
    if Repair.objects.filter(issue=issue, status__in=OPEN_REPAIR_STATUSES).exists():
        raise HealingError("a repair for this issue is already waiting or running")
    try:
        repair = repair_plan(target=issue.target, issue=issue, subjects=[row["subject"] for row in issue_subjects(issue)], actor=actor)
    except BackendError as exc:
        raise HealingError(str(exc)) from exc
    if repair is None:
        raise HealingError("nothing to repair: the subjects are gone")
    return repair


def _expire(repair: Repair) -> bool:
    with audited_transaction():
        if not Repair.objects.filter(pk=repair.pk, status=RepairStatus.APPROVED).update(status=RepairStatus.EXPIRED, finished_at=timezone.now()):
            return False
        repair.refresh_from_db()
        audit_append(actor=Actor.system("scheduler"), action=Action.REPAIR_EXPIRED, object_type="repair", object_id=repair.pk,
                     scope=scope_of(repair.target_id), summary="approval expired before the repair could run; it will not run",
                     before={"status": RepairStatus.APPROVED}, after={"status": RepairStatus.EXPIRED, "approved_at": repair.approved_at.isoformat()})
    return True


def approvals_sweep() -> dict[str, int]:
    """Expire approved repairs whose approval lapsed; warn about partial approvals about to lapse."""
    now = timezone.now()
    expired = sum(_expire(r) for r in Repair.objects.filter(status=RepairStatus.APPROVED, emergency=False, approved_at__lt=now - approval_ttl()))
    warned = 0
    soon = now + timedelta(seconds=int(_conf("APPROVAL_EXPIRY_WARNING_SECONDS")))
    for approval in Approval.objects.filter(repair__status=RepairStatus.AWAITING_APPROVAL, user__isnull=False, expiry_notified=False,
                                            expires_at__lte=soon, expires_at__gt=now).select_related("repair__target", "user"):
        with audited_transaction():
            if Approval.objects.filter(pk=approval.pk, expiry_notified=False).update(expiry_notified=True):
                notify(event=NotificationEvent.APPROVAL_EXPIRING, target=approval.repair.target,
                       text=f"{approval.user}'s approval of repair #{approval.repair_id} expires at {approval.expires_at:%H:%M} UTC; "
                            f"it still needs {approval.repair.approvals_required} approver(s).",
                       payload={"repair": approval.repair_id})
                warned += 1
    return {"expired": expired, "warned": warned}


def repair_recover(*, repair_id: int) -> Repair | None:
    """Finish an interrupted repair (its worker died mid-way) by rolling it back from its journal.
    Runs only when the target's lease no longer belongs to a live claim."""
    repair = Repair.objects.select_related("target").get(pk=repair_id)
    if repair.status != RepairStatus.RUNNING or not repair.workdir:
        return None
    owner = f"recover:{repair.pk}:{uuid.uuid4().hex}"
    if not target_lease_acquire(target_id=repair.target_id, owner=owner):
        return None  # the claim's lease is still live: the worker may be working
    try:
        with audited_transaction():
            if not Repair.objects.filter(pk=repair.pk, status=RepairStatus.RUNNING, claim_token=repair.claim_token).update(claim_token=owner[-32:]):
                return None
        rolled = _safe_rollback(backend_for(target_config(repair.target)), Path(repair.workdir))
        if "error" in rolled:
            repair.refresh_from_db()
            _defer_rollback(repair, actor=Actor.system("recovery"), why="interrupted", rolled=rolled)
            return None
        with audited_transaction():
            repair.refresh_from_db()
            _set_repair_status(repair, RepairStatus.ROLLED_BACK, actor=Actor.system("recovery"), action=Action.REPAIR_ROLLED_BACK,
                               summary="interrupted (the worker was lost mid-repair); rolled back from its journal",
                               after={"rollback": rolled}, finished_at=timezone.now(),
                               error="interrupted: the worker stopped mid-repair; rolled back from the journal")
            _after_failure(repair, repair.target)
        return repair
    finally:
        target_lease_release(target_id=repair.target_id, owner=owner)


def interrupted_repairs() -> list[int]:
    """Running repairs whose target lease has lapsed: their worker is gone."""
    now = timezone.now()
    return list(Repair.objects.filter(status=RepairStatus.RUNNING).filter(
        Q(target__lease_until__isnull=True) | Q(target__lease_until__lt=now)).values_list("pk", flat=True)[:20])
