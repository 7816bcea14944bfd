from __future__ import annotations

import json
from datetime import UTC

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
from healing.models import CacheTarget, Issue, Repair, RetroactiveReview
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
    context = {**selectors.overview_data(request.user), "can_approve": can(request.user, "approve")}
    template = "dashboard/partials/overview_body.html" if request.htmx else "dashboard/overview.html"
    return render(request, template, context)


CHART_METRICS = [("entries", "Entries"), ("bytes", "Bytes"), ("growth_bytes_per_hour", "Growth (bytes/hour)"),
                 ("read_latency_ms", "Sampled read latency (ms)"), ("hit_ratio", "Hit ratio"), ("evictions", "Evictions since last check"),
                 ("fragmentation_ratio", "Memory fragmentation ratio"), ("wal_bytes", "WAL bytes"), ("free_pages", "Free pages"),
                 ("health_score", "Health score")]
PERIODS = {"6h": 6, "24h": 24, "7d": 168, "30d": 720}


def _charts(target: CacheTarget, hours: float) -> str:
    """One plotly figure per metric, anomalies marked, and issues opened/resolved per day; as JSON."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    series = selectors.metric_series(target, hours=hours)
    shown = [(name, title) for name, title in CHART_METRICS if series.get(name)]
    opened, resolved = selectors.issue_flow(series)
    rows = len(shown) + 1
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, subplot_titles=[t for _, t in shown] + ["Issues opened / resolved"], vertical_spacing=0.06)
    for row, (name, _title) in enumerate(shown, start=1):
        points = series[name]
        fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers", name=name, marker={"size": 4}), row=row, col=1)
        marks = series.get(f"anomaly:{name}", [])
        if marks:
            fig.add_trace(go.Scatter(x=[p[0] for p in marks], y=[p[1] for p in marks], mode="markers", name=f"{name} anomaly",
                                     marker={"size": 11, "color": "#b42318", "symbol": "x"}), row=row, col=1)
    day_ms = 86_400_000 * 0.4  # two bars side by side per day on a date axis
    fig.add_trace(go.Bar(x=list(opened), y=list(opened.values()), name="opened", marker_color="#8a5a00", width=day_ms, offset=-day_ms), row=rows, col=1)
    fig.add_trace(go.Bar(x=list(resolved), y=list(resolved.values()), name="resolved", marker_color="#1a7f37", width=day_ms, offset=0), row=rows, col=1)
    fig.update_layout(height=230 * rows, margin={"l": 50, "r": 20, "t": 40, "b": 30}, showlegend=False, template="plotly_white")
    return fig.to_json()


@viewer_required
def target_detail(request: HttpRequest, name: str) -> HttpResponse:
    target = get_object_or_404(CacheTarget, name=name)
    period = request.GET.get("period", "24h") if request.GET.get("period") in PERIODS else "24h"
    return render(request, "dashboard/target.html", {
        "target": target,
        "period": period,
        "periods": list(PERIODS),
        "chart_json": _charts(target, PERIODS[period]),
        "issues": selectors.open_issues(target).order_by("-last_seen_at")[:50],
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
    if request.htmx:
        return render(request, "dashboard/partials/check_progress.html", {"target": target, "run": None, "since": timezone.now().timestamp()})
    messages.info(request, f"A pass of {target.name} was queued; this page shows it when it ends.")
    return redirect("dashboard:target", name=target.name)


@viewer_required
def target_check_progress(request: HttpRequest, name: str) -> HttpResponse:
    """Polled by the check-now button until the run it started has ended."""
    target = get_object_or_404(CacheTarget, name=name)
    try:
        since = float(request.GET.get("since", "0"))
    except ValueError:
        since = 0.0
    from datetime import datetime

    run = target.runs.filter(started_at__gte=datetime.fromtimestamp(since - 1, tz=UTC)).order_by("-started_at").first()
    return render(request, "dashboard/partials/check_progress.html", {"target": target, "run": run, "since": since})


def plan_diff(plan: dict) -> list[tuple[str, str]]:
    """The dry-run plan as lines of a diff: (kind, text) with kind del, add or chg."""
    lines = []
    for op in plan.get("operations", [])[:500]:
        subject, kind = op.get("subject", "?"), op.get("op", "?")
        if kind == "quarantine":
            lines.append(("del", f"- {subject}  ({op.get('bytes', 0)} bytes) → quarantine" + ("; its index record removed" if op.get("drop_index_record") else "")))
        elif kind == "index_add":
            lines.append(("add", f"+ index record for {subject}, from the entry"))
        elif kind == "index_remove":
            lines.append(("del", f"- index record {op.get('key', subject)} (its entry is gone)"))
        elif kind == "index_update":
            lines.append(("chg", f"~ index record {op.get('key', subject)} ← the entry's created_at, access count, last access, length"))
        elif kind == "index_rebuild":
            lines.append(("chg", f"~ .index.json rebuilt from {op.get('entries', '?')} entries (the old one kept for rollback)"))
        elif kind == "chmod":
            lines.append(("chg", f"~ {subject}: mode {op.get('mode_from')} → {op.get('mode_to')}"))
        elif kind == "rewrite_key":
            lines.append(("chg", f"~ {subject}: key field → the file name"))
        elif kind == "clamp_timestamps":
            lines.append(("chg", f"~ {subject}: future timestamps → now"))
        else:
            lines.append(("chg", f"~ {kind} {subject}"))
    return lines


@viewer_required
def issue_detail(request: HttpRequest, pk: int) -> HttpResponse:
    issue = get_object_or_404(Issue.objects.select_related("target"), pk=pk)
    spec = CHECKS.get(issue.code)
    return render(request, "dashboard/issue.html", {
        "issue": issue,
        "spec": spec,
        "repair_spec": spec.repair_spec_for(issue.target.kind) if spec else None,
        "diagnoses": issue.diagnoses.filter(active=True),
        "repairs": [(r, plan_diff(r.plan)) for r in issue.repairs.order_by("-created_at")[:5]],
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
    except Repair.DoesNotExist as exc:
        raise Http404 from exc
    return render(request, "dashboard/repair.html", {
        "repair": repair,
        "diff": plan_diff(repair.plan),
        "expires_at": selectors.approval_expiry(repair),
        "plan_json": json.dumps(repair.plan, indent=2),
        "can_approve": can(request.user, "approve"),
        "can_operate": can(request.user, "operate"),
        "can_break_glass": can(request.user, "break_glass"),
    })


@viewer_required
def approvals(request: HttpRequest) -> HttpResponse:
    awaiting = selectors.approval_queue(request.user, limit=25)
    for repair in awaiting:
        repair.expires_at = selectors.approval_expiry(repair)
        repair.diff = plan_diff(repair.plan)[:8]
    total = Repair.objects.filter(status="awaiting_approval").count()
    return render(request, "dashboard/approvals.html", {"awaiting": awaiting, "total": total, "can_approve": can(request.user, "approve")})


def _act(request: HttpRequest, pk: int, fn, **kwargs) -> HttpResponse:
    if request.htmx and request.headers.get("HX-Target", "").startswith("decide-"):
        try:
            repair = fn(actor=request.user, repair_id=pk, **kwargs)
            message, ok = f"Repair #{repair.pk}: {repair.get_status_display().lower()}.", True
        except (services.HealingError, AccessDenied) as exc:
            message, ok = str(exc), False
        return render(request, "dashboard/partials/decision.html", {"message": message, "ok": ok, "pk": pk})
    try:
        repair = fn(actor=request.user, repair_id=pk, **kwargs)
        messages.success(request, f"Repair #{repair.pk}: {repair.get_status_display().lower()}.")
    except (services.HealingError, AccessDenied) as exc:
        messages.error(request, str(exc))
    except Repair.DoesNotExist as exc:
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
