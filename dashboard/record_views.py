"""Pages over the compliance record: the audit log, chain verification and reports."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.contrib import messages
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from compliance.actions import Action
from compliance.keys import public_pem
from compliance.models import AuditEvent, ComplianceReport
from compliance.reports import report_generate
from compliance.services import chain_verify
from dashboard.views import viewer_required
from healing.access import can
from healing.models import CacheTarget

PAGE = 50


def _day(text: str | None, default: datetime) -> datetime:
    if not text:
        return default
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return default
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _short(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 160 else text[:157] + "…"


def field_diff(before, after) -> list[tuple[str, str, str]]:
    """(field, before, after) for each field that differs; whole values when either side is not a mapping."""
    if before is None and after is None:
        return []
    if not isinstance(before, dict) or not isinstance(after, dict):
        return [("", "" if before is None else _short(before), "" if after is None else _short(after))]
    keys = sorted(set(before) | set(after))
    return [(k, "" if k not in before else _short(before[k]), "" if k not in after else _short(after[k])) for k in keys if before.get(k) != after.get(k)]


@viewer_required
def audit_log(request: HttpRequest) -> HttpResponse:
    """Filter by target, actor, action and period; keyset pagination on the sequence number."""
    qs = AuditEvent.objects.order_by("-seq")
    target = request.GET.get("target", "")
    if target:
        t = CacheTarget.objects.filter(name=target).first()
        qs = qs.filter(scope=f"target:{t.pk}" if t else "target:none")
    if request.GET.get("actor"):
        qs = qs.filter(actor_label__icontains=request.GET["actor"])
    if request.GET.get("action"):
        qs = qs.filter(action=request.GET["action"])
    if request.GET.get("since"):
        qs = qs.filter(at__gte=_day(request.GET["since"], timezone.now()))
    if request.GET.get("until"):
        qs = qs.filter(at__lt=_day(request.GET["until"], timezone.now()))
    before = request.GET.get("before", "")
    if before.isdigit():
        qs = qs.filter(seq__lt=int(before))
    events = list(qs[: PAGE + 1])
    more = len(events) > PAGE
    events = events[:PAGE]
    for event in events:
        event.changes = field_diff(event.before, event.after)
    query = request.GET.copy()
    query.pop("before", None)
    from compliance.models import Checkpoint

    return render(request, "dashboard/audit.html", {
        "checkpoint": Checkpoint.objects.order_by("-seq").first(),
        "events": events, "next_before": events[-1].seq if more and events else None, "query": query.urlencode(),
        "targets": CacheTarget.objects.order_by("name").values_list("name", flat=True), "actions": Action.values, "filters": request.GET,
    })


@viewer_required
def audit_verify(request: HttpRequest) -> HttpResponse:
    result = chain_verify()
    return render(request, "dashboard/verify.html", {"result": result, "checked_at": timezone.now()})


@viewer_required
def compliance_page(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    return render(request, "dashboard/compliance.html", {
        "reports": ComplianceReport.objects.all()[:50], "targets": CacheTarget.objects.order_by("name"),
        "default_start": (now - timedelta(days=30)).date().isoformat(), "default_end": (now + timedelta(days=1)).date().isoformat(),
        "can_generate": can(request.user, "operate"),
    })


@viewer_required
@require_POST
def compliance_generate(request: HttpRequest) -> HttpResponse:
    if not can(request.user, "operate"):
        messages.error(request, "you are not allowed to do this: the operator role is required")
        return redirect("dashboard:compliance")
    now = timezone.now()
    start = _day(request.POST.get("start"), now - timedelta(days=30))
    end = _day(request.POST.get("end"), now)
    try:
        report = report_generate(start=start, end=end, targets=request.POST.getlist("targets"), actor=request.user)
    except ValueError as exc:
        messages.error(request, str(exc))
        return redirect("dashboard:compliance")
    messages.success(request, f"Report #{report.pk} generated: {report.summary['population']['changes']} change(s).")
    return redirect("dashboard:compliance")


@viewer_required
def compliance_download(request: HttpRequest, pk: int, fmt: str) -> FileResponse:
    report = get_object_or_404(ComplianceReport, pk=pk)
    signature = fmt.endswith(".sig")
    info = report.files.get(fmt.removesuffix(".sig"))
    if not info:
        raise Http404("no such format")
    path = Path(info["signature_path"] if signature else info["path"])
    if not path.exists():
        raise Http404("the file is gone from the report directory")
    return FileResponse(open(path, "rb"), as_attachment=True, filename=path.name)


@viewer_required
def public_key(request: HttpRequest) -> HttpResponse:
    response = HttpResponse(public_pem(), content_type="application/x-pem-file")
    response["Content-Disposition"] = 'attachment; filename="aicache-healing-audit-public.pem"'
    return response
