"""Reads that the pages, the API and the command line share."""

from __future__ import annotations

from django.db.models import Count, Prefetch, Q, QuerySet

from healing.choices import IssueStatus, RepairStatus
from healing.models import CacheTarget, CheckRun, Diagnosis, Issue, Repair


def targets_overview() -> QuerySet[CacheTarget]:
    return CacheTarget.objects.annotate(
        open_issues=Count("issues", filter=~Q(issues__status=IssueStatus.RESOLVED), distinct=True),
        awaiting=Count("repairs", filter=Q(repairs__status=RepairStatus.AWAITING_APPROVAL), distinct=True),
    ).order_by("name")


def open_issues(target: CacheTarget | None = None) -> QuerySet[Issue]:
    qs = Issue.objects.exclude(status=IssueStatus.RESOLVED).select_related("target")
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
