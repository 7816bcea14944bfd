"""Every state change of the engine. Keyword-only, transactional, audited through `compliance`.

The loop, one pass per target:

    check (backend) -> issues -> diagnosis -> plan (dry run) -> policy gate -> execute -> verify -> close or roll back
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.text import slugify

from compliance.actions import Action
from compliance.actors import Actor
from compliance.selectors import audit_events_for
from compliance.services import audit_append, audited_transaction, canonical_json
from healing.access import AccessDenied, require
from healing.backends import BackendError, TargetConfig, backend_for
from healing.backends.base import CheckOutcome, Finding
from healing.baselines import anomaly_findings, disk_forecast_finding
from healing.catalog import CHECKS
from healing.choices import (
    LIVE_ISSUE_STATUSES,
    OPEN_REPAIR_STATUSES,
    ApprovalDecision,
    IssueStatus,
    Kind,
    NotificationEvent,
    PolicyDecision,
    RepairStatus,
    Risk,
    RunStatus,
)
from healing.diagnosis import DiagnosisContext, IssueView, diagnose
from healing.guards import (
    active_freeze,
    approval_ttl,
    automated_repairs_last_hour,
    automation_limit,
    freeze_message,
    recent_failed_verifications,
)
from healing.health import health_score
from healing.models import (
    Approval,
    CacheTarget,
    ChangeFreeze,
    CheckRun,
    Diagnosis,
    Issue,
    MetricSample,
    Repair,
    RepairPolicy,
    RetroactiveReview,
)
from healing.notify import notify

__all__ = ["AccessDenied", "HealingError"]

log = logging.getLogger(__name__)


class HealingError(Exception):
    """A refusal or failure with a message meant for the person who asked."""


def _conf(key: str) -> Any:
    return settings.HEALING[key]


def scope_of(target: CacheTarget | int) -> str:
    return f"target:{target if isinstance(target, int) else target.pk}"


def target_config(target: CacheTarget) -> TargetConfig:
    return TargetConfig(
        id=target.pk,
        name=target.name,
        kind=target.kind,
        location=target.location,
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
        "options": target.options,
        "storm_mode": target.storm_mode,
    }


# ---------------------------------------------------------------------------------------- targets
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
) -> CacheTarget:
    name = name.strip()
    if not name or slugify(name) != name:
        raise HealingError(f"target name {name!r} must be a slug: lower-case letters, digits, '-' or '_'")
    if kind not in Kind.values:
        raise HealingError(f"unknown kind {kind!r}; choose one of {', '.join(Kind.values)}")
    if kind == Kind.AICACHE_FS:
        location = os.path.abspath(os.path.expanduser(location.strip()))
    if not location:
        raise HealingError("a location is required (a directory, a file or a URL)")
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
            labels=list(labels or []),
            description=description,
            check_interval_seconds=interval,
            byte_budget=byte_budget,
            options=dict(options or {}),
            is_demo=is_demo,
            next_check_at=timezone.now(),
        )
        audit_append(actor=actor, action=Action.TARGET_CREATED, object_type="target", object_id=target.pk,
                     scope=scope_of(target), summary=f"target {name} ({kind}) at {location}", after=_target_snapshot(target))
    return target


def target_update(*, actor: Any, target_id: int, **changes: Any) -> CacheTarget:
    allowed = {"labels", "enabled", "check_interval_seconds", "byte_budget", "options", "description", "location", "allowed_models"}
    unknown = set(changes) - allowed
    if unknown:
        raise HealingError(f"cannot change {', '.join(sorted(unknown))} of a target")
    with audited_transaction():
        target = CacheTarget.objects.select_for_update().get(pk=target_id)
        before = _target_snapshot(target)
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


# ----------------------------------------------------------------------------------------- leases
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


# --------------------------------------------------------------------------------------- checking
@dataclass
class CheckReport:
    run: CheckRun
    outcome: CheckOutcome
    grouped: dict[str, list[Finding]] = field(default_factory=dict)
    issues: list[Issue] = field(default_factory=list)
    diagnoses: list[Diagnosis] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.run.target.name,
            "run": self.run.pk,
            "status": self.run.status,
            "error": self.run.error or None,
            "findings": self.run.findings,
            "settling": self.run.settling,
            "duration_ms": self.run.duration_ms,
            "stats": self.run.stats,
            "issues": [
                {
                    "id": issue.pk,
                    "code": issue.code,
                    "severity": issue.severity,
                    "title": issue.title,
                    "subjects": issue.subject_count,
                    "sample": issue.sample[:5],
                }
                for issue in self.issues
            ],
            "diagnoses": [
                {"rule": d.rule, "title": d.title, "confidence": d.confidence, "explanation": d.explanation}
                for d in self.diagnoses
            ],
        }


def _metric_history(target: CacheTarget, names: list[str], window: int) -> dict[str, list[tuple[float, float]]]:
    history: dict[str, list[tuple[float, float]]] = {}
    for name in names:
        rows = list(MetricSample.objects.filter(target=target, name=name).order_by("-at").values_list("at", "value")[:window])
        history[name] = [(at.timestamp(), value) for at, value in reversed(rows)]
    return history


def _metric_findings(target: CacheTarget, outcome: CheckOutcome, now: float) -> list[Finding]:
    """perf.anomaly and fs.disk_forecast: the store's metrics against their own history."""
    window = int(_conf("ANOMALY_WINDOW"))
    names = ["entries", "bytes", "read_latency_ms", "growth_bytes_per_hour"]
    history = _metric_history(target, names, window)
    current = {k: v for k, v in outcome.metrics.items() if k in names}
    past_bytes = history.get("bytes", [])
    if past_bytes and "bytes" in current and now - past_bytes[-1][0] > 1:
        current["growth_bytes_per_hour"] = (current["bytes"] - past_bytes[-1][1]) / (now - past_bytes[-1][0]) * 3600
        outcome.metrics["growth_bytes_per_hour"] = current["growth_bytes_per_hour"]
    values = {k: [v for _, v in series] for k, series in history.items()}
    findings = anomaly_findings(values, current, min_samples=int(_conf("ANOMALY_MIN_SAMPLES")), threshold=float(_conf("ANOMALY_THRESHOLD")))
    if target.kind == Kind.AICACHE_FS and "bytes" in current and "disk_free_bytes" in outcome.metrics:
        points = past_bytes[-window:] + [(now, current["bytes"])]
        horizon = float(target.option("disk_forecast_horizon_hours", _conf("DISK_FORECAST_HORIZON_HOURS")))
        forecast = disk_forecast_finding(points, outcome.metrics["disk_free_bytes"], horizon_hours=horizon)
        if forecast:
            findings.append(forecast)
    return findings


def _group(findings: list[Finding]) -> dict[str, list[Finding]]:
    grouped: dict[str, dict[str, Finding]] = {}
    for finding in findings:
        # one subject may fail a check for two reasons (e.g. a secret in response and preview): keep the first
        grouped.setdefault(finding.code, {}).setdefault(finding.subject, finding)
    return {code: sorted(by_subject.values(), key=lambda f: f.subject) for code, by_subject in sorted(grouped.items())}


def _artifact_path(issue: Issue) -> Path:
    return Path(_conf("ARTIFACT_DIR")) / "issues" / f"issue-{issue.pk}.jsonl"


def _write_artifact(issue: Issue, findings: list[Finding]) -> str:
    path = _artifact_path(issue)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as fh:
        for finding in findings:
            fh.write(json.dumps(finding.as_dict(), default=str) + "\n")
    os.replace(tmp, path)
    return str(path.relative_to(Path(_conf("ARTIFACT_DIR"))))


def issue_subjects(issue: Issue) -> list[dict[str, Any]]:
    """The full subject list of an issue, from its artifact."""
    if not issue.artifact:
        return list(issue.sample)
    path = Path(_conf("ARTIFACT_DIR")) / issue.artifact
    try:
        with open(path) as fh:
            return [json.loads(line) for line in fh if line.strip()]
    except (OSError, ValueError):
        return list(issue.sample)


def _issue_snapshot(issue: Issue) -> dict[str, Any]:
    return {"code": issue.code, "status": issue.status, "subjects": issue.subject_count, "severity": issue.severity}


def _sync_issues(target: CacheTarget, run: CheckRun, grouped: dict[str, list[Finding]], *, complete: bool) -> list[Issue]:
    """Open, update and resolve the target's issues from one run's findings.

    When the run could not see the whole store (`complete` false), nothing is resolved.
    """
    now = timezone.now()
    sample_size = int(_conf("ISSUE_SAMPLE_SIZE"))
    live = {issue.fingerprint: issue for issue in Issue.objects.filter(target=target).filter(status__in=LIVE_ISSUE_STATUSES)}
    seen: list[Issue] = []
    for code, findings in grouped.items():
        spec = CHECKS[code]
        fingerprint = hashlib.sha256(f"{target.pk}:{code}".encode()).hexdigest()[:32]
        digest = hashlib.sha256("\n".join(f.subject for f in findings).encode()).hexdigest()
        sample = [f.as_dict() for f in findings[:sample_size]]
        issue = live.pop(fingerprint, None)
        if issue is None:
            issue = Issue.objects.create(
                target=target, code=code, fingerprint=fingerprint, severity=spec.severity, title=spec.title,
                subject_count=len(findings), sample=sample, first_seen_at=now, last_seen_at=now,
                first_run=run, last_run=run, subjects_digest=digest,
            )
            issue.artifact = _write_artifact(issue, findings)
            issue.save(update_fields=["artifact"])
            audit_append(actor=Actor.system("checker"), action=Action.ISSUE_OPENED, object_type="issue", object_id=issue.pk,
                         scope=scope_of(target), summary=f"{code}: {len(findings)} subject(s) on {target.name}",
                         after={**_issue_snapshot(issue), "sample": sample[:5], "run": run.pk})
            if spec.severity == "critical":
                notify(event=NotificationEvent.CRITICAL_ISSUE, target=target,
                       text=f"Critical issue on {target.name}: {spec.title} ({code}), {len(findings)} subject(s)",
                       payload={"issue": issue.pk, "code": code})
        else:
            changed = issue.subjects_digest != digest
            before = _issue_snapshot(issue)
            issue.last_seen_at, issue.last_run = now, run
            fields = ["last_seen_at", "last_run"]
            if changed:
                issue.subject_count, issue.sample, issue.subjects_digest = len(findings), sample, digest
                issue.artifact = _write_artifact(issue, findings)
                fields += ["subject_count", "sample", "subjects_digest", "artifact"]
            issue.save(update_fields=fields)
            if changed:
                audit_append(actor=Actor.system("checker"), action=Action.ISSUE_UPDATED, object_type="issue", object_id=issue.pk,
                             scope=scope_of(target), summary=f"{code}: now {len(findings)} subject(s)",
                             before=before, after={**_issue_snapshot(issue), "run": run.pk})
        seen.append(issue)
    for issue in live.values():
        if not complete and issue.code != "target.unreachable":
            continue
        issue_resolve(issue=issue, run=run, now=now)
    return seen


def issue_resolve(*, issue: Issue, run: CheckRun | None, now=None) -> None:
    now = now or timezone.now()
    before = _issue_snapshot(issue)
    issue.status, issue.resolved_at = IssueStatus.RESOLVED, now
    issue.save(update_fields=["status", "resolved_at"])
    audit_append(actor=Actor.system("checker"), action=Action.ISSUE_RESOLVED, object_type="issue", object_id=issue.pk,
                 scope=scope_of(issue.target_id), summary=f"{issue.code} no longer found",
                 before=before, after={**_issue_snapshot(issue), "run": run.pk if run else None,
                                       "open_seconds": round((now - issue.first_seen_at).total_seconds(), 1)})
    # a repair waiting for a decision on an issue that is gone has nothing left to do
    for repair in Repair.objects.filter(issue=issue, status=RepairStatus.AWAITING_APPROVAL):
        _set_repair_status(repair, RepairStatus.SUPERSEDED, actor=Actor.system("checker"), action=Action.REPAIR_SUPERSEDED,
                           summary=f"issue {issue.code} resolved before approval")


def issue_acknowledge(*, actor: Any, issue_id: int, comment: str = "") -> Issue:
    with audited_transaction():
        issue = Issue.objects.select_for_update().get(pk=issue_id)
        if issue.status != IssueStatus.OPEN:
            raise HealingError(f"issue #{issue.pk} is {issue.get_status_display().lower()}, not open")
        before = _issue_snapshot(issue)
        issue.status, issue.acknowledged_by = IssueStatus.ACKNOWLEDGED, actor
        issue.save(update_fields=["status", "acknowledged_by"])
        audit_append(actor=actor, action=Action.ISSUE_ACKNOWLEDGED, object_type="issue", object_id=issue.pk,
                     scope=scope_of(issue.target_id), summary=f"{issue.code} acknowledged", before=before,
                     after={**_issue_snapshot(issue), "comment": comment})
    return issue


def _recent_repairs(target: CacheTarget, now: float) -> list[dict[str, Any]]:
    since = timezone.now() - timedelta(hours=1)
    events = audit_events_for(scope=scope_of(target)).filter(action=Action.REPAIR_SUCCEEDED, at__gte=since)[:20]
    return [{"repair_id": int(e.object_id), "action": (e.after or {}).get("action", "?"), "at": e.at.timestamp()} for e in events]


def _diagnose(target: CacheTarget, run: CheckRun, outcome: CheckOutcome, issues: list[Issue]) -> list[Diagnosis]:
    now_dt = timezone.now()
    now = now_dt.timestamp()
    ctx = DiagnosisContext(
        issues={i.code: IssueView(i.pk, i.code, i.subject_count, i.first_seen_at.timestamp()) for i in issues},
        evidence=outcome.evidence,
        entries_total=int(outcome.stats.get("entries", 0)),
        now=now,
        recent_repairs=_recent_repairs(target, now),
        storm_share=float(target.option("storm_share", _conf("STORM_SHARE"))),
        storm_min_entries=int(_conf("STORM_MIN_ENTRIES")),
    )
    results = diagnose(ctx)
    by_code = {i.code: i for i in issues}
    active = {d.rule: d for d in Diagnosis.objects.filter(target=target, active=True)}
    kept: list[Diagnosis] = []
    for result in results:
        diagnosis = active.pop(result.rule, None)
        fresh = diagnosis is None
        if fresh:
            diagnosis = Diagnosis(target=target, rule=result.rule, created_at=now_dt)
        changed = fresh or diagnosis.explanation != result.explanation
        diagnosis.run, diagnosis.title, diagnosis.explanation = run, result.title, result.explanation
        diagnosis.confidence, diagnosis.evidence, diagnosis.recommendation = result.confidence, result.evidence, result.recommendation
        diagnosis.updated_at = now_dt
        diagnosis.save()
        diagnosis.issues.set([by_code[c] for c in result.codes if c in by_code])
        if changed:
            audit_append(actor=Actor.system("diagnosis"), action=Action.DIAGNOSIS_MADE, object_type="diagnosis", object_id=diagnosis.pk,
                         scope=scope_of(target), summary=f"{result.title} ({result.confidence:.0%})",
                         after={"rule": result.rule, "confidence": result.confidence, "evidence": result.evidence, "codes": result.codes})
        if result.storm:
            target_enter_storm(target=target, reason=result.explanation)
        kept.append(diagnosis)
    for diagnosis in active.values():
        diagnosis.active = False
        diagnosis.updated_at = now_dt
        diagnosis.save(update_fields=["active", "updated_at"])
        audit_append(actor=Actor.system("diagnosis"), action=Action.DIAGNOSIS_CLEARED, object_type="diagnosis", object_id=diagnosis.pk,
                     scope=scope_of(target), summary=f"{diagnosis.title}: no longer observed")
    return kept


def check_target(*, target_id: int, trigger: str = "manual", actor: Any = None) -> CheckReport:
    """Run every check of one target once and record what was found. Never raises for a bad store."""
    target = CacheTarget.objects.get(pk=target_id)
    started = timezone.now()
    with audited_transaction():
        for stale in CheckRun.objects.filter(target=target, status=RunStatus.RUNNING):
            stale.status, stale.finished_at, stale.error = RunStatus.FAILED, started, "abandoned: the check stopped before finishing"
            stale.save(update_fields=["status", "finished_at", "error"])
            audit_append(actor=Actor.system("checker"), action=Action.CHECK_FAILED, object_type="checkrun", object_id=stale.pk,
                         scope=scope_of(target), summary=stale.error)
        run = CheckRun.objects.create(target=target, trigger=trigger, started_at=started)
        audit_append(actor=actor, action=Action.CHECK_STARTED, object_type="checkrun", object_id=run.pk,
                     scope=scope_of(target), summary=f"check of {target.name} ({trigger})")
    clock = time.perf_counter()
    crashed = ""
    try:
        outcome = backend_for(target_config(target)).check()
    except BackendError as exc:
        outcome, crashed = CheckOutcome(reachable=False, error=str(exc)), str(exc)
    except Exception as exc:  # a bug in a check must not take the worker down or leave the run open
        log.exception("check crashed", extra={"target": target.name})
        outcome, crashed = CheckOutcome(reachable=False, error=f"the check failed: {exc.__class__.__name__}: {exc}"), "crash"
    now = timezone.now()
    if outcome.reachable:
        outcome.findings.extend(_metric_findings(target, outcome, now.timestamp()))
    grouped = _group(outcome.findings)
    report = CheckReport(run=run, outcome=outcome, grouped=grouped)
    with audited_transaction():
        if outcome.reachable:
            MetricSample.objects.bulk_create([MetricSample(target=target, run=run, name=k, value=float(v), at=now) for k, v in outcome.metrics.items()])
        if not crashed:
            report.issues = _sync_issues(target, run, grouped, complete=outcome.reachable)
            if outcome.reachable:
                report.diagnoses = _diagnose(target, run, outcome, report.issues)
        if crashed or not outcome.reachable:
            run.status = RunStatus.FAILED
        else:
            run.status = RunStatus.ISSUES if grouped else RunStatus.HEALTHY
        run.finished_at = now
        run.duration_ms = int((time.perf_counter() - clock) * 1000)
        run.findings = sum(len(v) for v in grouped.values())
        run.settling = outcome.settling
        run.entries_scanned = int(outcome.stats.get("entries", 0))
        run.files_read = int(outcome.stats.get("files_read", 0))
        run.error = outcome.error
        run.stats = {**outcome.stats, "by_code": {code: len(v) for code, v in grouped.items()}}
        run.save()
        if not crashed:
            target.refresh_from_db(fields=["storm_mode", "breaker_tripped"])
            live = Issue.objects.filter(target=target).filter(status__in=LIVE_ISSUE_STATUSES).values_list("severity", flat=True)
            score = health_score(live, unreachable=not outcome.reachable, storm=target.storm_mode, breaker=target.breaker_tripped)
            opened = sum(1 for i in report.issues if i.first_run_id == run.pk)
            resolved = Issue.objects.filter(target=target, status=IssueStatus.RESOLVED, resolved_at__gte=started).count()
            samples = [MetricSample(target=target, run=run, name="health_score", value=float(score), at=now),
                       MetricSample(target=target, run=run, name="issues_opened", value=float(opened), at=now),
                       MetricSample(target=target, run=run, name="issues_resolved", value=float(resolved), at=now)]
            samples += [MetricSample(target=target, run=run, name=f"anomaly:{f.subject}", value=float(f.detail.get("value", 0)), at=now)
                        for f in grouped.get("perf.anomaly", [])]
            MetricSample.objects.bulk_create(samples)
        CacheTarget.objects.filter(pk=target.pk).update(
            last_check_at=now, next_check_at=now + timedelta(seconds=target.check_interval_seconds)
        )
        audit_append(actor=actor, action=Action.CHECK_FINISHED if run.status != RunStatus.FAILED else Action.CHECK_FAILED,
                     object_type="checkrun", object_id=run.pk, scope=scope_of(target),
                     summary=f"{target.name}: {run.get_status_display().lower()}" + (f" ({run.error})" if run.error else ""),
                     after={"status": run.status, "by_code": run.stats["by_code"], "settling": run.settling, "duration_ms": run.duration_ms})
    return report


# ---------------------------------------------------------------------------------------- repairs
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
    with audited_transaction():
        _set_repair_status(repair, RepairStatus.ROLLED_BACK, actor=executor, action=Action.REPAIR_ROLLED_BACK,
                           summary="verification failed; rolled back automatically",
                           after={"verification": verification, "rollback": rolled}, verification=verification,
                           finished_at=timezone.now(), error="verification failed: the issue still reproduces or something new appeared")
        _after_failure(repair, target)


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
        outcome = backend.rollback(Path(repair.workdir))
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


# ------------------------------------------------------------------------------------------- pass
@dataclass
class PassReport:
    target: str
    state: str  # done | busy | failed
    check: CheckReport | None = None
    planned: list[Repair] = field(default_factory=list)
    executed: list[Repair] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        def repair_row(r: Repair) -> dict[str, Any]:
            return {"id": r.pk, "code": r.code, "action": r.action, "risk": r.risk, "status": r.status,
                    "blast_entries": r.blast_entries, "gate": r.gate_reason, "verification": r.verification or None, "error": r.error or None}

        return {
            "target": self.target,
            "state": self.state,
            "check": self.check.as_dict() if self.check else None,
            "planned": [repair_row(r) for r in self.planned],
            "executed": [repair_row(r) for r in self.executed],
        }


def target_pass(*, target_id: int, trigger: str = "schedule", actor: Any = None, execute_inline: bool = False) -> PassReport:
    """One turn of the loop on one target. `execute_inline` runs approved repairs here instead of in Celery."""
    target = CacheTarget.objects.get(pk=target_id)
    owner = f"pass:{uuid.uuid4().hex}"
    if not target_lease_acquire(target_id=target.pk, owner=owner):
        return PassReport(target.name, "busy")
    try:
        report = check_target(target_id=target.pk, trigger=trigger, actor=actor)
        target.refresh_from_db()
        planned = _plan_for_issues(target, report, enqueue=not execute_inline) if report.outcome.reachable and report.run.status != RunStatus.FAILED else []
    finally:
        target_lease_release(target_id=target.pk, owner=owner)
    result = PassReport(target.name, "failed" if report.run.status == RunStatus.FAILED else "done", report, planned)
    if execute_inline:
        for repair in Repair.objects.filter(target=target, status=RepairStatus.APPROVED).order_by("pk"):
            outcome = repair_execute(repair_id=repair.pk, run_check_after=False)
            if outcome.repair is not None:
                outcome.repair.refresh_from_db()
                result.executed.append(outcome.repair)
        if result.executed:
            result.check = check_target(target_id=target.pk, trigger="after_repair", actor=actor)
    return result
