"""Give each request an id and a source for the audit record (the record itself is written by services)."""

from __future__ import annotations

import uuid

from compliance.context import audit_context


class RequestContextMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request_id = request.headers.get("X-Request-ID", "")[:64] or uuid.uuid4().hex
        # the socket peer and the forwarded chain are kept apart: only the first can't be forged
        with audit_context(
            request_id=request_id,
            source_ip=request.META.get("REMOTE_ADDR", ""),
            forwarded_for=request.headers.get("X-Forwarded-For", "")[:300],
        ):
            response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response
