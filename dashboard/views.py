from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from healing import selectors, services
from healing.access import AccessDenied, can
from healing.catalog import CHECKS, REPAIRS
from healing.models import CacheTarget, Issue, RetroactiveReview
from healing.tasks import enqueue_pass


def viewer_required(view):
    """Signed in, and at least the viewer role: the one gate in front of every page."""

    @login_required
    def wrapped(request: HttpRequest, *args, **kwargs):
        if not can(request.user, "view"):
            raise PermissionDenied("you need the viewer role (or higher) to see this")
        return view(request, *args, **kwargs)

    wrapped.__name__ = view.__name__
    wrapped.__doc__ = view.__doc__
    return wrapped


@viewer_required
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


@viewer_required
def target_detail(request: HttpRequest, name: str) -> HttpResponse:
    target = get_object_or_404(CacheTarget, name=name)
    return render(request, "dashboard/target.html", {
        "target": target,
        "issues": selectors.open_issues(target),
        "diagnoses": selectors.active_diagnoses(target),
        "runs": selectors.recent_runs(target),
        "repairs": selectors.recent_repairs(target),
        "can_operate": can(request.user, "operate"),
        "can_reset_breaker": can(request.user, "reset_breaker"),
    })


@viewer_required
@require_POST
def target_check_now(request: HttpRequest, name: str) -> HttpResponse:
    target = get_object_or_404(CacheTarget, name=name)
    if not can(request.user, "operate"):
        messages.error(request, "you are not allowed to do this: the operator role is required")
        return redirect("dashboard:target", name=target.name)
    enqueue_pass(target.pk, "manual")
    messages.info(request, f"A pass of {target.name} was queued; this page shows it when it ends.")
    return redirect("dashboard:target", name=target.name)


@viewer_required
def issue_detail(request: HttpRequest, pk: int) -> HttpResponse:
    issue = get_object_or_404(Issue.objects.select_related("target"), pk=pk)
    spec = CHECKS.get(issue.code)
    return render(request, "dashboard/issue.html", {
        "issue": issue,
        "spec": spec,
        "repair_spec": spec.repair_spec if spec else None,
        "diagnoses": issue.diagnoses.filter(active=True),
        "repairs": issue.repairs.order_by("-created_at"),
        "can_operate": can(request.user, "operate"),
    })


@viewer_required
@require_POST
def issue_request_repair(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        repair = services.repair_request(actor=request.user, issue_id=pk)
        messages.success(request, f"Repair #{repair.pk} planned: {repair.get_status_display().lower()}.")
        return redirect("dashboard:repair", pk=repair.pk)
    except (services.HealingError, AccessDenied) as exc:
        messages.error(request, str(exc))
    return redirect("dashboard:issue", pk=pk)


@viewer_required
def issue_subjects(request: HttpRequest, pk: int) -> HttpResponse:
    issue = get_object_or_404(Issue, pk=pk)
    body = "".join(json.dumps(row) + "\n" for row in services.issue_subjects(issue))
    response = HttpResponse(body, content_type="application/x-ndjson")
    response["Content-Disposition"] = f'attachment; filename="issue-{issue.pk}-subjects.jsonl"'
    return response


@viewer_required
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
        "can_break_glass": can(request.user, "break_glass"),
    })


def _act(request: HttpRequest, pk: int, fn, **kwargs) -> HttpResponse:
    try:
        repair = fn(actor=request.user, repair_id=pk, **kwargs)
        messages.success(request, f"Repair #{repair.pk}: {repair.get_status_display().lower()}.")
    except (services.HealingError, AccessDenied) as exc:
        messages.error(request, str(exc))
    except services.Repair.DoesNotExist as exc:
        raise Http404 from exc
    return redirect("dashboard:repair", pk=pk)


@viewer_required
@require_POST
def repair_approve(request: HttpRequest, pk: int) -> HttpResponse:
    return _act(request, pk, services.repair_approve, comment=request.POST.get("comment", ""))


@viewer_required
@require_POST
def repair_reject(request: HttpRequest, pk: int) -> HttpResponse:
    return _act(request, pk, services.repair_reject, comment=request.POST.get("comment", ""))


@viewer_required
@require_POST
def repair_rollback(request: HttpRequest, pk: int) -> HttpResponse:
    return _act(request, pk, services.repair_rollback, reason=request.POST.get("comment", ""))


@viewer_required
@require_POST
def repair_retry(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        new = services.repair_retry(actor=request.user, repair_id=pk)
        messages.success(request, f"Planned again as repair #{new.pk}: {new.get_status_display().lower()}.")
        return redirect("dashboard:repair", pk=new.pk)
    except (services.HealingError, AccessDenied) as exc:
        messages.error(request, str(exc))
    return redirect("dashboard:repair", pk=pk)


@viewer_required
@require_POST
def repair_break_glass(request: HttpRequest, pk: int) -> HttpResponse:
    return _act(request, pk, services.repair_break_glass, justification=request.POST.get("justification", ""))


@viewer_required
def reviews(request: HttpRequest) -> HttpResponse:
    qs = RetroactiveReview.objects.select_related("repair__target", "opened_by", "signed_off_by").order_by("signed_off_at", "due_at")
    return render(request, "dashboard/reviews.html", {"reviews": qs[:200], "now": timezone.now(), "can_approve": can(request.user, "approve")})


@viewer_required
@require_POST
def review_sign_off(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        services.review_sign_off(actor=request.user, review_id=pk, comment=request.POST.get("comment", ""))
        messages.success(request, f"Review #{pk} signed off.")
    except (services.HealingError, AccessDenied) as exc:
        messages.error(request, str(exc))
    return redirect("dashboard:reviews")


@viewer_required
@require_POST
def target_clear_storm(request: HttpRequest, name: str) -> HttpResponse:
    target = get_object_or_404(CacheTarget, name=name)
    try:
        if not can(request.user, "operate"):
            raise AccessDenied("you are not allowed to do this: the operator role is required")
        services.target_clear_storm(actor=request.user, target_id=target.pk, comment=request.POST.get("comment", ""))
        messages.success(request, f"Storm mode cleared on {target.name}.")
    except (services.HealingError, AccessDenied) as exc:
        messages.error(request, str(exc))
    return redirect("dashboard:target", name=target.name)


@viewer_required
@require_POST
def target_reset_breaker(request: HttpRequest, name: str) -> HttpResponse:
    target = get_object_or_404(CacheTarget, name=name)
    try:
        services.target_reset_breaker(actor=request.user, target_id=target.pk, comment=request.POST.get("comment", ""))
        messages.success(request, f"Circuit breaker reset on {target.name}.")
    except (services.HealingError, AccessDenied) as exc:
        messages.error(request, str(exc))
    return redirect("dashboard:target", name=target.name)


@viewer_required
def catalogue(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/catalogue.html", {"checks": CHECKS.values(), "repairs": REPAIRS})


@viewer_required
def plotly_js(request: HttpRequest) -> FileResponse:
    """plotly.min.js from the installed plotly package: the product works offline."""
    from pathlib import Path

    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    return FileResponse(open(path, "rb"), content_type="application/javascript")
