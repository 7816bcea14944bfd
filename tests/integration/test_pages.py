"""The plain pages, through HTTP as a person uses them."""

from __future__ import annotations

import json

from healing import services
from healing.models import Issue, Repair
from tests.failure_injection.faults import INJECTORS


def test_an_operator_sees_the_fault_and_an_approver_approves_it_in_the_page(client, store, make_target, approver, viewer):
    INJECTORS["fs.entry_corrupt"](store)
    target = make_target(store)
    services.target_pass(target_id=target.pk)
    issue = Issue.objects.get(code="fs.entry_corrupt")
    repair = Repair.objects.get()

    assert client.get("/").status_code == 302, "signed-out users go to the sign-in page"
    client.force_login(viewer)
    page = client.get("/").content.decode()
    assert "fs.entry_corrupt" in page and target.name in page
    issue_page = client.get(f"/issues/{issue.pk}/").content.decode()
    assert "Corrupt entry" in issue_page and issue.sample[0]["subject"] in issue_page
    from datetime import UTC, datetime

    mtime = datetime.fromtimestamp(issue.sample[0]["mtime"], UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert f"mtime: {mtime}" in issue_page, "times in a subject's detail read as dates, not epoch seconds"
    download = client.get(f"/issues/{issue.pk}/subjects.jsonl")
    assert download.status_code == 200 and issue.sample[0]["subject"] in download.content.decode()
    refused = client.post(f"/repairs/{repair.pk}/approve/", {"comment": "me"}, follow=True).content.decode()
    assert "not allowed to approve" in refused

    client.force_login(approver)
    page = client.post(f"/repairs/{repair.pk}/approve/", {"comment": "quarantine"}, follow=True).content.decode()
    assert "approved" in page.lower()
    repair.refresh_from_db()
    assert repair.status == "approved"
    assert client.get("/checks/").status_code == 200
    assert client.get(f"/targets/{target.name}/").status_code == 200
    assert client.get("/repairs/999999/").status_code == 404
    js = client.get("/assets/plotly.min.js")
    assert js.status_code == 200 and js["Content-Type"] == "application/javascript"


def test_the_record_pages_verify_filter_and_export(client, store, make_target, operator, viewer):
    INJECTORS["fs.entry_corrupt"](store)
    target = make_target(store)
    services.target_pass(target_id=target.pk)
    client.force_login(viewer)
    assert "chain intact" in client.get("/audit/verify/").content.decode()
    page = client.get("/audit/", {"target": target.name, "action": "repair.planned"}).content.decode()
    assert "repair.planned" in page and "check.started</code>" not in page
    for _ in range(25):
        services.check_target(target_id=target.pk)
    first = client.get("/audit/").content.decode()
    assert "Older events" in first
    from compliance.models import AuditEvent

    oldest_shown = AuditEvent.objects.order_by("-seq")[49].seq
    older = client.get("/audit/", {"before": oldest_shown}).content.decode()
    assert f"<td>{oldest_shown - 1}</td>" in older and f"<td>{oldest_shown}</td>" not in older
    assert client.post("/compliance/generate/", {"start": "2026-01-01", "end": "2030-01-01"}, follow=True).status_code == 200
    from compliance.models import ComplianceReport

    assert not ComplianceReport.objects.exists(), "a viewer cannot generate reports"
    client.force_login(operator)
    page = client.post("/compliance/generate/", {"start": "2020-01-01", "end": "2030-01-01", "targets": [target.name]}, follow=True).content.decode()
    report = ComplianceReport.objects.get()
    assert f"Report #{report.pk} generated" in page and report.targets == [target.name]
    pdf = client.get(f"/compliance/{report.pk}/pdf/")
    assert pdf.status_code == 200 and b"".join(pdf.streaming_content).startswith(b"%PDF")
    sig = json.loads(b"".join(client.get(f"/compliance/{report.pk}/pdf.sig/").streaming_content))
    assert sig["algorithm"] == "ed25519" and sig["sha256"] == report.files["pdf"]["sha256"]
    assert client.get("/compliance/public-key.pem").content.startswith(b"-----BEGIN PUBLIC KEY-----")


def test_prometheus_metrics_and_json_logs_with_context(client, store, make_target, settings, caplog):
    import logging

    INJECTORS["fs.entry_corrupt"](store)
    target = make_target(store)
    services.target_pass(target_id=target.pk)
    body = client.get("/metrics").content.decode()
    assert 'healing_issues_open{check="fs.entry_corrupt",severity="high"} 1.0' in body
    assert 'healing_repairs{status="awaiting_approval"} 1.0' in body
    assert "healing_approval_wait_seconds" in body and "healing_queue_depth" in body and "healing_check_run_duration_seconds" in body
    settings.HEALING = {**settings.HEALING, "METRICS_TOKEN": "s3"}
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3").status_code == 200

    from pythonjsonlogger.json import JsonFormatter

    from healing.logctx import ContextFilter, log_context

    record = logging.LogRecord("healing", logging.INFO, __file__, 1, "repair finished", None, None)
    with log_context(target=target.pk, repair=7):
        ContextFilter().filter(record)
    line = json.loads(JsonFormatter("%(message)s %(request_id)s %(target)s %(repair)s").format(record))
    assert line["message"] == "repair finished" and line["target"] == target.pk and line["repair"] == 7
    response = client.get("/accounts/login/", HTTP_X_REQUEST_ID="req-123")
    assert response["X-Request-ID"] == "req-123"
