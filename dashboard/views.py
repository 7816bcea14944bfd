from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from dashboard.access import can, require
from healing import selectors, services
from healing.catalog import CHECKS, REPAIRS
from healing.models import CacheTarget, Issue
from healing.tasks import enqueue_pass


@login_required
def overview(request: HttpRequest) -> HttpResponse:
    context = {
        "targets": selectors.targets_overview(),
        "issues": selectors.open_issues()[:50],
        "diagnoses": selectors.active_diagnoses()[:20],
        "awaiting": selectors.repairs_awaiting()[:50],
        "recent": selectors.recent_repairs(limit=20),
        "can_approve": can(request.user, "approve"),
    }
    template = "dashboard/partials/overview_body.html" if request.htmx else "dashboard/overview.html"
    return render(request, template, context)


@login_required
def target_detail(request: HttpRequest, name: str) -> HttpResponse:
    target = get_object_or_404(CacheTarget, name=name)
    return render(request, "dashboard/target.html", {
        "target": target,
        "issues": selectors.open_issues(target),
        "diagnoses": selectors.active_diagnoses(target),
        "runs": selectors.recent_runs(target),
        "repairs": selectors.recent_repairs(target),
        "can_operate": can(request.user, "operate"),
    })


@login_required
@require_POST
def target_check_now(request: HttpRequest, name: str) -> HttpResponse:
    target = get_object_or_404(CacheTarget, name=name)
    require(request.user, "operate")
    enqueue_pass(target.pk, "manual")
    messages.info(request, f"A pass of {target.name} was queued; this page shows it when it ends.")
    return redirect("dashboard:target", name=target.name)


@login_required
def issue_detail(request: HttpRequest, pk: int) -> HttpResponse:
    issue = get_object_or_404(Issue.objects.select_related("target"), pk=pk)
    spec = CHECKS.get(issue.code)
    return render(request, "dashboard/issue.html", {
        "issue": issue,
        "spec": spec,
        "repair_spec": spec.repair_spec if spec else None,
        "diagnoses": issue.diagnoses.filter(active=True),
        "repairs": issue.repairs.order_by("-created_at"),
    })


@login_required
def issue_subjects(request: HttpRequest, pk: int) -> HttpResponse:
    issue = get_object_or_404(Issue, pk=pk)
    body = "".join(json.dumps(row) + "\n" for row in services.issue_subjects(issue))
    response = HttpResponse(body, content_type="application/x-ndjson")
    response["Content-Disposition"] = f'attachment; filename="issue-{issue.pk}-subjects.jsonl"'
    return response


@login_required
def repair_detail(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        repair = selectors.repair_detail(pk)
    except services.Repair.DoesNotExist as exc:
        raise Http404 from exc
    return render(request, "dashboard/repair.html", {
        "repair": repair,
        "plan_json": json.dumps(repair.plan, indent=2),
        "can_approve": can(request.user, "approve"),
        "can_operate": can(request.user, "operate"),
    })


def _act(request: HttpRequest, pk: int, fn, **kwargs) -> HttpResponse:
    try:
        repair = fn(actor=request.user, repair_id=pk, **kwargs)
        messages.success(request, f"Repair #{repair.pk}: {repair.get_status_display().lower()}.")
    except (services.HealingError, services.AccessDenied) as exc:
        messages.error(request, str(exc))
    return redirect("dashboard:repair", pk=pk)


@login_required
@require_POST
def repair_approve(request: HttpRequest, pk: int) -> HttpResponse:
    return _act(request, pk, services.repair_approve, comment=request.POST.get("comment", ""))


@login_required
@require_POST
def repair_reject(request: HttpRequest, pk: int) -> HttpResponse:
    return _act(request, pk, services.repair_reject, comment=request.POST.get("comment", ""))


@login_required
@require_POST
def repair_rollback(request: HttpRequest, pk: int) -> HttpResponse:
    return _act(request, pk, services.repair_rollback, reason=request.POST.get("comment", ""))


@login_required
@require_POST
def target_clear_storm(request: HttpRequest, name: str) -> HttpResponse:
    target = get_object_or_404(CacheTarget, name=name)
    require(request.user, "operate")
    try:
        services.target_clear_storm(actor=request.user, target_id=target.pk, comment=request.POST.get("comment", ""))
        messages.success(request, f"Storm mode cleared on {target.name}.")
    except services.HealingError as exc:
        messages.error(request, str(exc))
    return redirect("dashboard:target", name=target.name)


@login_required
def catalogue(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/catalogue.html", {"checks": CHECKS.values(), "repairs": REPAIRS})


@login_required
def plotly_js(request: HttpRequest) -> FileResponse:
    """plotly.min.js from the installed plotly package: the product works offline."""
    from pathlib import Path

    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    return FileResponse(open(path, "rb"), content_type="application/javascript")
