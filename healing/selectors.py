"""Reads that the pages, the API and the command line share."""

from __future__ import annotations

from django.db.models import Count, Prefetch, Q, QuerySet

from healing.choices import LIVE_ISSUE_STATUSES, IssueStatus, RepairStatus
from healing.models import CacheTarget, CheckRun, Diagnosis, Issue, Repair


def targets_overview() -> QuerySet[CacheTarget]:
    return CacheTarget.objects.annotate(
        open_issues=Count("issues", filter=~Q(issues__status=IssueStatus.RESOLVED), distinct=True),
        awaiting=Count("repairs", filter=Q(repairs__status=RepairStatus.AWAITING_APPROVAL), distinct=True),
    ).order_by("name")


def open_issues(target: CacheTarget | None = None) -> QuerySet[Issue]:
    qs = Issue.objects.filter(status__in=LIVE_ISSUE_STATUSES).select_related("target")
    return qs.filter(target=target) if target else qs


def active_diagnoses(target: CacheTarget | None = None) -> QuerySet[Diagnosis]:
    qs = Diagnosis.objects.filter(active=True).select_related("target").prefetch_related("issues")
    return qs.filter(target=target) if target else qs


def repairs_awaiting() -> QuerySet[Repair]:
    return Repair.objects.filter(status=RepairStatus.AWAITING_APPROVAL).select_related("target", "issue", "requested_by").order_by("created_at")


def recent_repairs(target: CacheTarget | None = None, limit: int = 20) -> QuerySet[Repair]:
    qs = Repair.objects.select_related("target", "issue").order_by("-created_at")
    return (qs.filter(target=target) if target else qs)[:limit]


def recent_runs(target: CacheTarget, limit: int = 10) -> QuerySet[CheckRun]:
    return CheckRun.objects.filter(target=target).order_by("-started_at")[:limit]


def repair_detail(repair_id: int) -> Repair:
    return Repair.objects.select_related("target", "issue", "policy", "requested_by").prefetch_related(
        Prefetch("approvals", queryset=Repair.approvals.rel.related_model.objects.select_related("user", "policy"))
    ).get(pk=repair_id)


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 1) if values else None


def overview_data(user, *, now=None) -> dict:
    """Everything the overview shows, in a fixed number of queries whatever the number of rows."""
    from datetime import timedelta

    from django.utils import timezone

    now = now or timezone.now()
    targets = list(CacheTarget.objects.order_by("name"))
    by_target: dict[int, dict[str, int]] = {t.pk: {} for t in targets}
    totals: dict[str, int] = {}
    for row in Issue.objects.filter(status__in=LIVE_ISSUE_STATUSES).values("target_id", "severity").annotate(n=Count("id")):
        by_target.setdefault(row["target_id"], {})[row["severity"]] = row["n"]
        totals[row["severity"]] = totals.get(row["severity"], 0) + row["n"]
    awaiting_counts = dict(Repair.objects.filter(status=RepairStatus.AWAITING_APPROVAL).values_list("target_id").annotate(n=Count("id")))
    trend: dict[int, list[float]] = {t.pk: [] for t in targets}
    from healing.models import MetricSample

    for target_id, value in MetricSample.objects.filter(name="health_score", at__gte=now - timedelta(hours=24)).order_by("at").values_list("target_id", "value"):
        trend.setdefault(target_id, []).append(value)
    for target in targets:
        target.severity_counts = by_target.get(target.pk, {})
        target.open_issues = sum(target.severity_counts.values())
        target.awaiting = awaiting_counts.get(target.pk, 0)
        target.trend = trend.get(target.pk, [])[-48:]
        target.health = int(target.trend[-1]) if target.trend else None
    awaiting = approval_queue(user, limit=10)
    awaiting_total = Repair.objects.filter(status=RepairStatus.AWAITING_APPROVAL).count()
    since = now - timedelta(hours=24)
    recent = list(Repair.objects.filter(created_at__gte=since).select_related("target").order_by("-created_at")[:20])
    outcomes = dict(Repair.objects.filter(created_at__gte=since).values_list("status").annotate(n=Count("id")))
    week = now - timedelta(days=7)
    # MTTR and MTTD over the most recent 200 issues of the week: a bounded sample, so the page stays fast
    resolved = Issue.objects.filter(resolved_at__gte=week).order_by("-resolved_at").values_list("first_seen_at", "resolved_at")[:200]
    mttr = _mean([(r - f).total_seconds() for f, r in resolved])
    delays = []
    for first_seen, sample in Issue.objects.filter(first_seen_at__gte=week).order_by("-first_seen_at").values_list("first_seen_at", "sample")[:200]:
        times = [row.get("mtime") or row.get("timestamp") for row in (sample or []) if isinstance(row, dict)]
        times = [t for t in times if isinstance(t, int | float)]
        if times:
            delays.append(max(0.0, first_seen.timestamp() - min(times)))
    return {
        "targets": targets,
        "severity_totals": totals,
        "issues": list(Issue.objects.filter(status__in=LIVE_ISSUE_STATUSES).select_related("target").order_by("-last_seen_at")[:30]),
        "diagnoses": list(Diagnosis.objects.filter(active=True).select_related("target").order_by("-updated_at")[:20]),
        "awaiting": awaiting,
        "awaiting_total": awaiting_total,
        "recent": recent,
        "outcomes": outcomes,
        "mttr_seconds": mttr,
        "mttd_seconds": _mean(delays),
    }


def metric_series(target: CacheTarget, *, hours: float) -> dict[str, list[tuple]]:
    """Every metric of a target over the last `hours`, in one query."""
    from datetime import timedelta

    from django.utils import timezone

    from healing.models import MetricSample

    series: dict[str, list[tuple]] = {}
    since = timezone.now() - timedelta(hours=hours)
    for name, at, value in MetricSample.objects.filter(target=target, at__gte=since).order_by("at").values_list("name", "at", "value"):
        series.setdefault(name, []).append((at, value))
    return series


def issue_flow(series: dict[str, list[tuple]]) -> tuple[dict, dict]:
    """Issues opened and resolved per day, from the counts each check run records as metrics."""
    opened: dict = {}
    resolved: dict = {}
    for name, out in (("issues_opened", opened), ("issues_resolved", resolved)):
        for at, value in series.get(name, []):
            out[at.date()] = out.get(at.date(), 0) + int(value)
    return opened, resolved


def approval_expiry(repair: Repair):
    """When the approval in force (or the first partial one) lapses, for the countdown; None if none."""
    from healing.guards import approval_ttl

    if repair.status == RepairStatus.APPROVED and repair.approved_at and not repair.emergency:
        return repair.approved_at + approval_ttl()
    given = [a.expires_at for a in repair.approvals.all() if a.expires_at and a.user_id]
    return min(given) if given and repair.status == RepairStatus.AWAITING_APPROVAL else None


def approval_queue(user, *, limit: int = 100) -> list[Repair]:
    """Repairs awaiting approval, the ones this user may decide first (oldest first within each)."""
    awaiting = list(Repair.objects.filter(status=RepairStatus.AWAITING_APPROVAL).select_related("target", "requested_by")
                    .prefetch_related("approvals").order_by("created_at")[:limit])
    me = getattr(user, "pk", None)
    for repair in awaiting:
        repair.mine = repair.requested_by_id != me and not any(a.user_id == me for a in repair.approvals.all())
    awaiting.sort(key=lambda r: (not r.mine, r.created_at))
    return awaiting
