"""The approval gate, through the REST API and the pages, as the people who use it."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django.conf import settings
from django.core import mail
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from compliance.models import AuditEvent
from healing import services
from healing.models import Notification, NotificationRoute, Repair, RetroactiveReview
from healing.notify import deliver
from tests.conftest import read_index
from tests.failure_injection.faults import INJECTORS


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def corrupt_repair(store, make_target):
    """A medium-risk repair (quarantine a corrupt entry) waiting for one approver."""
    INJECTORS["fs.entry_corrupt"](store)
    target = make_target(store, labels=["prod"])
    services.target_pass(target_id=target.pk)
    return Repair.objects.get(code="fs.entry_corrupt")


def test_self_approval_is_refused_in_the_api_and_the_page(corrupt_repair, approver, client):
    issue_id = corrupt_repair.issue_id
    services.repair_reject(actor=approver, repair_id=corrupt_repair.pk, comment="plan it again myself")
    mine = api(approver).post(f"/api/issues/{issue_id}/repair/")
    assert mine.status_code == 200 and mine.data["requested_by"] == "anna"
    refused = api(approver).post(f"/api/repairs/{mine.data['id']}/approve/", {"comment": "mine"}, format="json")
    assert refused.status_code == 409
    assert refused.data["detail"] == "you requested this repair, so someone else must approve it (separation of duties)"
    client.force_login(approver)
    page = client.post(f"/repairs/{mine.data['id']}/approve/", {"comment": "mine"}, follow=True).content.decode()
    assert "someone else must approve it (separation of duties)" in page


def test_a_viewer_cannot_approve(corrupt_repair, viewer, client):
    refused = api(viewer).post(f"/api/repairs/{corrupt_repair.pk}/approve/", {}, format="json")
    assert refused.status_code == 403
    assert refused.data["detail"] == "you are not allowed to approve or reject repairs: the approver role is required"
    client.force_login(viewer)
    assert "the approver role is required" in client.post(f"/repairs/{corrupt_repair.pk}/approve/", follow=True).content.decode()
    assert api(viewer).get("/api/repairs/").status_code == 200


def test_malformed_requests_get_a_4xx_with_a_reason(corrupt_repair, approver):
    assert api(approver).post("/api/repairs/999999/approve/", {}, format="json").status_code == 404
    bad = api(approver).post(f"/api/repairs/{corrupt_repair.pk}/break-glass/", {"justification": ["not", "text"]}, format="json")
    assert bad.status_code in (400, 403)
    rejected = api(approver).post(f"/api/repairs/{corrupt_repair.pk}/reject/", {"comment": ""}, format="json")
    assert rejected.status_code == 409 and rejected.data["detail"] == "a rejection needs a comment saying why"
    assert APIClient().get("/api/repairs/").status_code in (401, 403)


def test_an_expired_approval_never_runs(corrupt_repair, approver, client):
    with override_settings(HEALING={**settings.HEALING, "APPROVAL_TTL_SECONDS": 1}):
        assert api(approver).post(f"/api/repairs/{corrupt_repair.pk}/approve/", {"comment": "ok"}, format="json").status_code == 200
        time.sleep(1.2)
        outcome = services.repair_execute(repair_id=corrupt_repair.pk)
    assert outcome.state == "expired"
    detail = api(approver).get(f"/api/repairs/{corrupt_repair.pk}/").data
    assert detail["status"] == "expired" and detail["started_at"] is None
    again = api(approver).post(f"/api/repairs/{corrupt_repair.pk}/approve/", {}, format="json")
    assert again.status_code == 409 and again.data["detail"] == f"repair #{corrupt_repair.pk} is expired; only a repair awaiting approval can be approved"
    assert AuditEvent.objects.filter(action="repair.expired", object_id=str(corrupt_repair.pk)).count() == 1
    client.force_login(approver)
    page = client.post(f"/repairs/{corrupt_repair.pk}/approve/", {"comment": "again"}, follow=True).content.decode()
    assert f"repair #{corrupt_repair.pk} is expired; only a repair awaiting approval can be approved" in page


def test_a_freeze_blocks_approval_and_break_glass_opens_a_review(corrupt_repair, approver, admin_user, second_admin, client, store):
    now = timezone.now()
    services.change_freeze_create(actor=admin_user, label="prod", starts_at=now - timedelta(minutes=1), ends_at=now + timedelta(hours=2), reason="quarter close")
    refused = api(approver).post(f"/api/repairs/{corrupt_repair.pk}/approve/", {"comment": "go"}, format="json")
    assert refused.status_code == 409 and refused.data["detail"].startswith("cannot approve: change freeze on “prod” until")
    client.force_login(approver)
    assert "quarter close" in client.post(f"/repairs/{corrupt_repair.pk}/approve/", {"comment": "go"}, follow=True).content.decode()
    assert api(approver).post(f"/api/repairs/{corrupt_repair.pk}/break-glass/", {"justification": "customer outage, must fix"}, format="json").status_code == 403
    short = api(admin_user).post(f"/api/repairs/{corrupt_repair.pk}/break-glass/", {"justification": "now"}, format="json")
    assert short.status_code == 409 and "justification of at least 10 characters" in short.data["detail"]
    broke = api(admin_user).post(f"/api/repairs/{corrupt_repair.pk}/break-glass/", {"justification": "customers get truncated answers"}, format="json")
    assert broke.status_code == 200 and broke.data["emergency"] is True and broke.data["status"] == "approved"
    assert services.repair_execute(repair_id=corrupt_repair.pk).state == "done"
    assert Repair.objects.get(pk=corrupt_repair.pk).status == "succeeded"
    review = RetroactiveReview.objects.get(repair=corrupt_repair)
    own = api(admin_user).post(f"/api/reviews/{review.pk}/sign-off/", {"comment": "fine"}, format="json")
    assert own.status_code == 409 and "someone else must review it" in own.data["detail"]
    RetroactiveReview.objects.filter(pk=review.pk).update(due_at=timezone.now() - timedelta(minutes=1))
    overdue = api(approver).get("/api/reviews/?overdue=1").data["results"]
    assert [r["id"] for r in overdue] == [review.pk] and overdue[0]["overdue"] is True
    client.force_login(approver)
    assert "overdue" in client.get("/reviews/").content.decode()
    signed = api(second_admin).post(f"/api/reviews/{review.pk}/sign-off/", {"comment": "justified"}, format="json")
    assert signed.status_code == 200 and signed.data["signed_off_by"] == "alma"
    assert list(AuditEvent.objects.filter(object_type="review").values_list("action", flat=True).order_by("seq")) == ["review.opened", "review.signed_off"]


def test_repeated_failures_trip_the_breaker_until_an_admin_resets_it(tmp_path, make_target, operator, admin_user):
    root = tmp_path / "aicache"
    from tests.conftest import fill_store

    fill_store(root, 10)
    for i in range(3):
        (root / (f"{i}" * 64 + ".json")).mkdir(mode=0o500)  # unreadable in a way chmod cannot fix
    target = make_target(root)
    for attempt in range(3):
        services.target_pass(target_id=target.pk, execute_inline=True)
        assert list(Repair.objects.filter(code="fs.entry_unreadable").values_list("status", flat=True)) == ["rolled_back"] * (attempt + 1)
    target.refresh_from_db()
    assert target.breaker_tripped and "3 failed repairs" in target.breaker_reason
    assert AuditEvent.objects.filter(action="target.breaker_tripped").count() == 1
    services.target_pass(target_id=target.pk, execute_inline=True)
    held = Repair.objects.filter(code="fs.entry_unreadable").latest("pk")
    assert held.status == "awaiting_approval" and "circuit breaker tripped" in held.gate_reason
    no = api(operator).post(f"/api/targets/{target.name}/reset-breaker/", {"comment": "fixed"}, format="json")
    assert no.status_code == 403 and no.data["detail"] == "only admins may reset a circuit breaker"
    yes = api(admin_user).post(f"/api/targets/{target.name}/reset-breaker/", {"comment": "removed the bad directories"}, format="json")
    assert yes.status_code == 200 and yes.data["breaker_tripped"] is False


def test_automated_repairs_are_rate_limited_per_target(store, make_target):
    INJECTORS["fs.index_orphan"](store)
    INJECTORS["fs.index_stale"](store)
    INJECTORS["fs.index_dangling"](store)
    target = make_target(store, options={"auto_repairs_per_hour": 2})
    report = services.target_pass(target_id=target.pk)
    statuses = sorted(r.status for r in report.planned)
    assert statuses == ["approved", "approved", "awaiting_approval"]
    held = next(r for r in report.planned if r.status == "awaiting_approval")
    assert held.gate_reason.startswith("rate limit: 2 automated repairs")


def test_a_drifted_subject_is_skipped_and_said_so(corrupt_repair, approver, store):
    name = corrupt_repair.plan["operations"][0]["subject"]
    (store / name).write_text(json.dumps({"key": name[:-5], "value": "rewritten", "timestamp": time.time(), "ttl_seconds": None,
                                          "access_count": 0, "last_accessed": time.time()}))
    api(approver).post(f"/api/repairs/{corrupt_repair.pk}/approve/", {"comment": "ok"}, format="json")
    services.repair_execute(repair_id=corrupt_repair.pk)
    detail = api(approver).get(f"/api/repairs/{corrupt_repair.pk}/").data
    assert detail["status"] == "superseded"
    assert detail["error"] == "" and "changed since the plan was approved" in json.dumps(Repair.objects.get(pk=corrupt_repair.pk).result)


def test_the_drift_and_the_breaker_read_on_the_pages(corrupt_repair, approver, store, client):
    test_a_drifted_subject_is_skipped_and_said_so(corrupt_repair, approver, store)
    client.force_login(approver)
    assert "changed since the plan was approved" in client.get(f"/repairs/{corrupt_repair.pk}/").content.decode()


def test_critical_changes_need_two_distinct_approvers(store, make_target, approver, second_approver):
    from healing.models import RepairPolicy

    RepairPolicy.objects.create(name="secrets: two approvers", order=1, match_checks=["ai.secret_leak"], decision="approvers", approvers_required=2)
    INJECTORS["ai.secret_leak"](store)
    target = make_target(store)
    services.target_pass(target_id=target.pk)
    repair = Repair.objects.get(code="ai.secret_leak")
    assert repair.approvals_required == 2 and repair.policy.name == "secrets: two approvers" and repair.policy_version == 1
    first = api(approver).post(f"/api/repairs/{repair.pk}/approve/", {"comment": "one"}, format="json")
    assert first.status_code == 200 and first.data["status"] == "awaiting_approval"
    twice = api(approver).post(f"/api/repairs/{repair.pk}/approve/", {"comment": "one again"}, format="json")
    assert twice.status_code == 409 and twice.data["detail"] == "you have already approved this repair; it needs a different approver"
    second = api(second_approver).post(f"/api/repairs/{repair.pk}/approve/", {"comment": "two"}, format="json")
    assert second.data["status"] == "approved" and {a["user"] for a in second.data["approvals"]} == {"anna", "bert"}


class _Hook(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):  # noqa: N802
        _Hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_notifications_reach_webhook_and_mail_and_a_dead_webhook_blocks_nothing(store, make_target):
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        NotificationRoute.objects.create(label="prod", emails=["oncall@example.test"], webhook_url=f"http://127.0.0.1:{server.server_port}/hook")
        NotificationRoute.objects.create(label="*", webhook_url="http://127.0.0.1:9/nothing-listens-here")
        INJECTORS["fs.entry_corrupt"](store)
        target = make_target(store, labels=["prod"])
        report = services.target_pass(target_id=target.pk)
        assert report.state == "done"
        notes = list(Notification.objects.filter(event="awaiting_approval"))
        assert len(notes) == 2
        results = {n.route.webhook_url.endswith("/hook"): deliver(n.pk) for n in notes}
        assert results == {True: True, False: False}
        assert _Hook.received[-1]["text"].startswith(f"Repair #{report.planned[0].pk} (quarantine_entries, medium risk")
        assert mail.outbox[-1].to == ["oncall@example.test"]
        dead = Notification.objects.get(route__label="*")
        assert dead.delivered_at is None and "webhook" in dead.last_error
    finally:
        server.shutdown()
    assert read_index(store)  # the store is untouched by all this


def test_an_admin_edit_of_a_policy_is_versioned_audited_and_used(client, store, make_target, approver):
    from django.contrib.auth import get_user_model

    from healing.models import RepairPolicy

    root = get_user_model().objects.create_superuser("root", "root@example.test", "pw")
    client.force_login(root)
    policy = RepairPolicy.objects.get(name="medium risk: one approver")
    form = {"name": policy.name, "order": policy.order, "enabled": "on", "match_labels": "[]", "match_checks": "[]", "match_actions": "[]",
            "match_risks": '["medium"]', "max_blast_entries": "", "max_blast_bytes": "", "decision": "approvers", "approvers_required": "2"}
    response = client.post(f"/admin/healing/repairpolicy/{policy.pk}/change/", form)
    assert response.status_code == 302, response.content.decode()[:500]
    policy.refresh_from_db()
    assert policy.version == 2 and policy.approvers_required == 2
    event = AuditEvent.objects.get(action="policy.updated")
    assert event.actor_label == "root" and event.after["version"] == 2
    INJECTORS["fs.entry_corrupt"](store)
    target = make_target(store)
    services.target_pass(target_id=target.pk)
    repair = Repair.objects.get(code="fs.entry_corrupt")
    assert (repair.policy_id, repair.policy_version, repair.approvals_required) == (policy.pk, 2, 2)
    gated = AuditEvent.objects.get(action="repair.gated", object_id=str(repair.pk))
    assert gated.actor_kind == "policy" and gated.actor_version == 2


def test_the_record_is_in_the_api_too(corrupt_repair, operator, viewer):
    events = api(viewer).get("/api/audit/?action=repair.planned").data["results"]
    assert [e["object_id"] for e in events] == [str(corrupt_repair.pk)] and events[0]["hash"]
    assert api(viewer).get("/api/audit/?since=yesterday").status_code == 400
    assert api(viewer).get("/api/audit/verify/").data["ok"] is True
    assert api(viewer).post("/api/reports/", {"period_start": "2026-01-01T00:00:00Z", "period_end": "2030-01-01T00:00:00Z"}, format="json").status_code == 403
    made = api(operator).post("/api/reports/", {"period_start": "2026-01-01T00:00:00Z", "period_end": "2030-01-01T00:00:00Z"}, format="json")
    assert made.status_code == 201 and set(made.data["files"]) == {"json", "csv", "pdf"}
    bad = api(operator).post("/api/reports/", {"period_start": "2030-01-01T00:00:00Z", "period_end": "2026-01-01T00:00:00Z"}, format="json")
    assert bad.status_code == 400 and bad.data["detail"] == "the period must end after it starts"
    codes = {c["code"] for c in api(viewer).get("/api/checks/").data}
    assert {"fs.entry_corrupt", "ai.secret_leak", "perf.anomaly"} <= codes
    schema = api(viewer).get("/api/schema/")
    assert schema.status_code == 200 and b"/api/repairs/{id}/approve/" in schema.content
