"""Checking a target: run the backend, record metrics, open/update/resolve issues, diagnose."""


from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.utils import timezone

from compliance.actions import Action
from compliance.actors import Actor
from compliance.selectors import audit_events_for
from compliance.services import audit_append, audited_transaction
from healing.backends import BackendError, backend_for
from healing.backends.base import CheckOutcome, Finding
from healing.baselines import anomaly_findings, disk_forecast_finding
from healing.catalog import CHECKS
from healing.choices import (
    LIVE_ISSUE_STATUSES,
    IssueStatus,
    Kind,
    NotificationEvent,
    RepairStatus,
    RunStatus,
)
from healing.diagnosis import DiagnosisContext, IssueView, diagnose
from healing.health import health_score
from healing.models import (
    CacheTarget,
    CheckRun,
    Diagnosis,
    Issue,
    MetricSample,
    Repair,
)
from healing.notify import notify
from healing.services.base import HealingError, _conf, _set_repair_status, scope_of, target_config
from healing.services.targets import target_enter_storm

log = logging.getLogger(__name__)


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
    names = ["entries", "bytes", "read_latency_ms", "growth_bytes_per_hour", "hit_ratio"]
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
        outcome = backend_for(target_config(target, full_speed=trigger != "schedule")).check()
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
