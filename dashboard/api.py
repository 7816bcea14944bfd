"""REST API: every resource and action the pages offer, with the same rules (the services decide)."""

from __future__ import annotations

from django.db.models import Q
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.decorators import api_view
from rest_framework.exceptions import PermissionDenied
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response

from healing import services
from healing.access import can
from healing.choices import LIVE_ISSUE_STATUSES
from healing.models import Approval, CacheTarget, Issue, Repair, RetroactiveReview
from healing.tasks import enqueue_pass


class Cursor(CursorPagination):
    ordering = "-pk"
    page_size = 50
    max_page_size = 500
    page_size_query_param = "page_size"


class TargetSerializer(serializers.ModelSerializer):
    class Meta:
        model = CacheTarget
        fields = ["id", "name", "kind", "location", "labels", "enabled", "is_demo", "check_interval_seconds", "byte_budget",
                  "storm_mode", "storm_reason", "breaker_tripped", "breaker_reason", "last_check_at", "next_check_at"]


class IssueSerializer(serializers.ModelSerializer):
    target = serializers.SlugRelatedField(slug_field="name", read_only=True)

    class Meta:
        model = Issue
        fields = ["id", "target", "code", "severity", "status", "title", "subject_count", "sample", "first_seen_at", "last_seen_at", "resolved_at"]


class ApprovalSerializer(serializers.ModelSerializer):
    user = serializers.SlugRelatedField(slug_field="username", read_only=True)
    policy = serializers.SlugRelatedField(slug_field="name", read_only=True)

    class Meta:
        model = Approval
        fields = ["decision", "user", "policy", "policy_version", "plan_hash", "comment", "created_at", "expires_at"]


class RepairSerializer(serializers.ModelSerializer):
    target = serializers.SlugRelatedField(slug_field="name", read_only=True)
    requested_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    approvals = ApprovalSerializer(many=True, read_only=True)

    class Meta:
        model = Repair
        fields = ["id", "target", "issue", "code", "action", "risk", "status", "emergency", "blast_entries", "blast_bytes",
                  "plan_hash", "plan", "policy_version", "approvals_required", "gate_reason", "requested_by", "created_at",
                  "approved_at", "started_at", "finished_at", "verification", "error", "approvals"]


class ReviewSerializer(serializers.ModelSerializer):
    opened_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    signed_off_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    overdue = serializers.SerializerMethodField()

    class Meta:
        model = RetroactiveReview
        fields = ["id", "repair", "justification", "opened_by", "opened_at", "due_at", "signed_off_by", "signed_off_at", "comment", "overdue"]

    def get_overdue(self, review: RetroactiveReview) -> bool:
        return review.signed_off_at is None and review.due_at < timezone.now()


class CommentIn(serializers.Serializer):
    comment = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")


class JustificationIn(serializers.Serializer):
    justification = serializers.CharField(max_length=2000)


def _need_view(request: Request) -> None:
    if not can(request.user, "view"):
        raise PermissionDenied("you need the viewer role (or higher) to see this")


def _page(request: Request, qs, serializer):
    paginator = Cursor()
    page = paginator.paginate_queryset(qs, request)
    return paginator.get_paginated_response(serializer(page, many=True).data)


def _act(fn, **kwargs) -> Response:
    """Run a service; its refusals become 403 (role) or 409 (state), with the service's own words."""
    try:
        result = fn(**kwargs)
    except services.AccessDenied as exc:
        return Response({"detail": str(exc)}, status=status.HTTP_403_FORBIDDEN)
    except services.HealingError as exc:
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
    if isinstance(result, Repair):
        return Response(RepairSerializer(Repair.objects.get(pk=result.pk)).data)
    if isinstance(result, RetroactiveReview):
        return Response(ReviewSerializer(result).data)
    if isinstance(result, CacheTarget):
        return Response(TargetSerializer(result).data)
    return Response({"ok": True})


def _body(request: Request, serializer_class) -> dict:
    data = serializer_class(data=request.data)
    data.is_valid(raise_exception=True)
    return data.validated_data


@extend_schema(responses=TargetSerializer(many=True))
@api_view(["GET"])
def targets(request: Request) -> Response:
    _need_view(request)
    return _page(request, CacheTarget.objects.all(), TargetSerializer)


@extend_schema(responses=TargetSerializer)
@api_view(["GET"])
def target_detail(request: Request, name: str) -> Response:
    _need_view(request)
    return Response(TargetSerializer(get_object_or_404(CacheTarget, name=name)).data)


@extend_schema(request=None, responses=inline_serializer("Queued", {"queued": serializers.BooleanField()}))
@api_view(["POST"])
def target_check(request: Request, name: str) -> Response:
    target = get_object_or_404(CacheTarget, name=name)
    if not can(request.user, "operate"):
        return Response({"detail": "you are not allowed to do this: the operator role is required"}, status=status.HTTP_403_FORBIDDEN)
    enqueue_pass(target.pk, "manual")
    return Response({"queued": True}, status=status.HTTP_202_ACCEPTED)


@extend_schema(request=CommentIn, responses=TargetSerializer)
@api_view(["POST"])
def target_reset_breaker(request: Request, name: str) -> Response:
    target = get_object_or_404(CacheTarget, name=name)
    return _act(services.target_reset_breaker, actor=request.user, target_id=target.pk, comment=_body(request, CommentIn)["comment"])


@extend_schema(responses=IssueSerializer(many=True))
@api_view(["GET"])
def issues(request: Request) -> Response:
    _need_view(request)
    qs = Issue.objects.select_related("target")
    if request.query_params.get("status") == "open":
        qs = qs.filter(status__in=LIVE_ISSUE_STATUSES)
    elif request.query_params.get("status"):
        qs = qs.filter(status=request.query_params["status"])
    if request.query_params.get("target"):
        qs = qs.filter(target__name=request.query_params["target"])
    if request.query_params.get("code"):
        qs = qs.filter(code=request.query_params["code"])
    return _page(request, qs, IssueSerializer)


@extend_schema(responses=IssueSerializer)
@api_view(["GET"])
def issue_detail(request: Request, pk: int) -> Response:
    _need_view(request)
    return Response(IssueSerializer(get_object_or_404(Issue.objects.select_related("target"), pk=pk)).data)


@extend_schema(request=None, responses=RepairSerializer)
@api_view(["POST"])
def issue_request_repair(request: Request, pk: int) -> Response:
    get_object_or_404(Issue, pk=pk)
    return _act(services.repair_request, actor=request.user, issue_id=pk)


@extend_schema(responses=RepairSerializer(many=True))
@api_view(["GET"])
def repairs(request: Request) -> Response:
    _need_view(request)
    qs = Repair.objects.select_related("target", "requested_by").prefetch_related("approvals__user", "approvals__policy")
    if request.query_params.get("status"):
        qs = qs.filter(status=request.query_params["status"])
    if request.query_params.get("target"):
        qs = qs.filter(target__name=request.query_params["target"])
    return _page(request, qs, RepairSerializer)


@extend_schema(responses=RepairSerializer)
@api_view(["GET"])
def repair_detail(request: Request, pk: int) -> Response:
    _need_view(request)
    return Response(RepairSerializer(get_object_or_404(Repair, pk=pk)).data)


def _repair_or_404(pk: int) -> Repair:
    return get_object_or_404(Repair, pk=pk)


@extend_schema(request=CommentIn, responses=RepairSerializer)
@api_view(["POST"])
def repair_approve(request: Request, pk: int) -> Response:
    _repair_or_404(pk)
    return _act(services.repair_approve, actor=request.user, repair_id=pk, comment=_body(request, CommentIn)["comment"])


@extend_schema(request=CommentIn, responses=RepairSerializer)
@api_view(["POST"])
def repair_reject(request: Request, pk: int) -> Response:
    _repair_or_404(pk)
    return _act(services.repair_reject, actor=request.user, repair_id=pk, comment=_body(request, CommentIn)["comment"])


@extend_schema(request=None, responses=RepairSerializer)
@api_view(["POST"])
def repair_retry(request: Request, pk: int) -> Response:
    _repair_or_404(pk)
    return _act(services.repair_retry, actor=request.user, repair_id=pk)


@extend_schema(request=JustificationIn, responses=RepairSerializer)
@api_view(["POST"])
def repair_break_glass(request: Request, pk: int) -> Response:
    _repair_or_404(pk)
    return _act(services.repair_break_glass, actor=request.user, repair_id=pk, justification=_body(request, JustificationIn)["justification"])


@extend_schema(request=CommentIn, responses=RepairSerializer)
@api_view(["POST"])
def repair_rollback(request: Request, pk: int) -> Response:
    _repair_or_404(pk)
    return _act(services.repair_rollback, actor=request.user, repair_id=pk, reason=_body(request, CommentIn)["comment"])


@extend_schema(responses=ReviewSerializer(many=True))
@api_view(["GET"])
def reviews(request: Request) -> Response:
    _need_view(request)
    qs = RetroactiveReview.objects.select_related("opened_by", "signed_off_by")
    if request.query_params.get("open"):
        qs = qs.filter(signed_off_at__isnull=True)
    if request.query_params.get("overdue"):
        qs = qs.filter(Q(signed_off_at__isnull=True) & Q(due_at__lt=timezone.now()))
    return _page(request, qs, ReviewSerializer)


@extend_schema(request=CommentIn, responses=ReviewSerializer)
@api_view(["POST"])
def review_sign_off(request: Request, pk: int) -> Response:
    get_object_or_404(RetroactiveReview, pk=pk)
    return _act(services.review_sign_off, actor=request.user, review_id=pk, comment=_body(request, CommentIn)["comment"])





class AuditCursor(CursorPagination):
    ordering = "-seq"
    page_size = 100
    max_page_size = 1000
    page_size_query_param = "page_size"


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        from compliance.models import AuditEvent

        model = AuditEvent
        fields = ["seq", "at", "actor_kind", "actor_id", "actor_label", "actor_version", "action", "object_type", "object_id", "scope",
                  "summary", "before", "after", "request_id", "source_ip", "forwarded_for", "prev_hash", "hash"]


class ReportSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="pk", read_only=True)
    title = serializers.CharField(read_only=True)
    period_start = serializers.DateTimeField()
    period_end = serializers.DateTimeField()
    targets = serializers.ListField(child=serializers.CharField(), required=False, default=list)
    created_at = serializers.DateTimeField(read_only=True)
    created_by = serializers.CharField(read_only=True)
    files = serializers.JSONField(read_only=True)
    summary = serializers.JSONField(read_only=True)


@extend_schema(responses=AuditEventSerializer(many=True))
@api_view(["GET"])
def audit_events(request: Request) -> Response:
    """The record, newest first; filter with target, actor, action, since, until."""
    from compliance.models import AuditEvent

    _need_view(request)
    qs = AuditEvent.objects.all()
    params = request.query_params
    if params.get("target"):
        target = CacheTarget.objects.filter(name=params["target"]).first()
        qs = qs.filter(scope=f"target:{target.pk}" if target else "target:none")
    if params.get("actor"):
        qs = qs.filter(actor_label__icontains=params["actor"])
    if params.get("action"):
        qs = qs.filter(action=params["action"])
    for key, lookup in (("since", "at__gte"), ("until", "at__lt")):
        if params.get(key):
            from django.utils.dateparse import parse_datetime

            when = parse_datetime(params[key])
            if when is None:
                return Response({"detail": f"{key} must be an ISO date-time, e.g. 2026-12-01T00:00:00Z"}, status=status.HTTP_400_BAD_REQUEST)
            qs = qs.filter(**{lookup: when})
    paginator = AuditCursor()
    page = paginator.paginate_queryset(qs, request)
    return paginator.get_paginated_response(AuditEventSerializer(page, many=True).data)


@extend_schema(responses=inline_serializer("Verification", {"ok": serializers.BooleanField(), "summary": serializers.CharField()}))
@api_view(["GET"])
def audit_verify(request: Request) -> Response:
    from compliance.services import chain_verify

    _need_view(request)
    result = chain_verify()
    return Response({**result.as_dict(), "summary": result.summary()})


@extend_schema(request=ReportSerializer, responses=ReportSerializer(many=True))
@api_view(["GET", "POST"])
def reports(request: Request) -> Response:
    from compliance.models import ComplianceReport
    from compliance.reports import report_generate

    _need_view(request)
    if request.method == "GET":
        return _page(request, ComplianceReport.objects.all(), ReportSerializer)
    if not can(request.user, "operate"):
        return Response({"detail": "you are not allowed to do this: the operator role is required"}, status=status.HTTP_403_FORBIDDEN)
    data = _body(request, ReportSerializer)
    try:
        report = report_generate(start=data["period_start"], end=data["period_end"], targets=data["targets"], actor=request.user)
    except ValueError as exc:
        return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
    return Response(ReportSerializer(report).data, status=status.HTTP_201_CREATED)


@extend_schema(responses=inline_serializer("Check", {"code": serializers.CharField(), "title": serializers.CharField()}, many=True))
@api_view(["GET"])
def checks(request: Request) -> Response:
    """The check catalogue: the same texts as the Checks page and the reports."""
    from healing.catalog import CHECKS

    return Response([{"code": c.code, "kinds": list(c.kinds), "title": c.title, "severity": c.severity, "meaning": c.meaning,
                      "detection": c.detection, "repair": None if c.repair_spec is None else
                      {"action": c.repair_spec.action, "title": c.repair_spec.title, "risk": c.repair_spec.risk, "description": c.repair_spec.description},
                      "repairs_by_kind": {kind: {"action": r.action, "title": r.title, "risk": r.risk, "description": r.description}
                                          for kind, r in c.repairs_by_kind}}
                     for c in CHECKS.values()])
