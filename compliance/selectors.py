from __future__ import annotations

from django.db.models import QuerySet

from compliance.models import AuditEvent


def audit_events_for(*, scope: str | None = None, object_type: str | None = None, object_id: str | None = None) -> QuerySet[AuditEvent]:
    qs = AuditEvent.objects.all()
    if scope:
        qs = qs.filter(scope=scope)
    if object_type:
        qs = qs.filter(object_type=object_type)
    if object_id is not None:
        qs = qs.filter(object_id=str(object_id))
    return qs.order_by("-seq")
