"""The record, end to end: concurrent appenders, append-only storage, verification through the
command line, and a report built from a scripted scenario, exported, signed and verified offline."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection, transaction
from django.test import override_settings
from django.utils import timezone

from compliance.actors import Actor
from compliance.models import AuditEvent, Checkpoint
from compliance.reports import report_generate
from compliance.services import audit_append, audited_transaction, chain_verify, checkpoint_take
from healing import services
from healing.models import Repair
from tests.conftest import fill_store
from tests.failure_injection.faults import INJECTORS

ROOT = Path(__file__).resolve().parents[2]


def _verify_cli() -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("compliance", "verify", stdout=out)
    except SystemExit as exc:
        return int(exc.code), out.getvalue()
    return 0, out.getvalue()


@pytest.mark.postgres_too
@pytest.mark.django_db(transaction=True)
def test_concurrent_appenders_never_fork_the_chain():
    def writer(n: int) -> None:
        try:
            for i in range(60):
                with audited_transaction():
                    audit_append(actor=Actor.system(f"writer-{n}"), action="check.started", object_type="test", object_id=f"{n}-{i}")
        finally:
            connection.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    [t.start() for t in threads]
    [t.join(120) for t in threads]
    seqs = list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, 241))
    result = chain_verify()
    assert result.ok, result.summary()


@pytest.mark.postgres_too
@pytest.mark.django_db(transaction=True)
def test_nothing_from_a_rolled_back_transaction_is_recorded():
    with pytest.raises(RuntimeError):
        with audited_transaction():
            audit_append(actor=None, action="check.started", object_type="test", object_id="1")
            raise RuntimeError("the change failed")
    assert not AuditEvent.objects.exists()
    with pytest.raises(RuntimeError, match="inside the transaction"):
        audit_append(actor=None, action="check.started", object_type="test", object_id="2")


@pytest.mark.postgres_too
@pytest.mark.django_db(transaction=True)
def test_the_table_is_append_only_and_tampering_is_named_by_the_verify_command(store, make_target):
    INJECTORS["fs.entry_corrupt"](store)
    services.target_pass(target_id=make_target(store).pk)
    checkpoint_take()
    assert _verify_cli()[0] == 0
    victim = AuditEvent.objects.order_by("seq")[3]
    if connection.vendor == "postgresql":
        with pytest.raises(Exception, match="append-only"):
            with transaction.atomic():
                AuditEvent.objects.filter(pk=victim.pk).update(summary="nothing to see")
        with pytest.raises(Exception, match="append-only"):
            with transaction.atomic():
                AuditEvent.objects.filter(pk=victim.pk).delete()
        with connection.cursor() as cursor:  # an attacker with the database owner's rights
            cursor.execute("ALTER TABLE compliance_auditevent DISABLE TRIGGER compliance_auditevent_append_only")
    AuditEvent.objects.filter(pk=victim.pk).update(summary="nothing to see")
    code, out = _verify_cli()
    assert code == 1 and out.strip() == f"chain broken at #{victim.seq}: edit — event #{victim.seq} was changed after it was written (its hash no longer matches its content)"
    # wholesale truncation of events and database checkpoints: the copies outside the database still tell
    last_seq = AuditEvent.objects.order_by("-seq").values_list("seq", flat=True)[0]
    AuditEvent.objects.filter(seq__gte=2).delete()
    Checkpoint.objects.all().delete()
    result = chain_verify()
    assert (result.first_break.seq, result.first_break.kind) == (2, "truncation") and f"#{last_seq}" in result.first_break.detail
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE compliance_auditevent ENABLE TRIGGER compliance_auditevent_append_only")


def test_the_admin_offers_no_way_to_change_the_record(client, db):
    from django.contrib.auth import get_user_model

    client.force_login(get_user_model().objects.create_superuser("root", "r@example.test", "pw"))
    with audited_transaction():
        event = audit_append(actor=None, action="check.started", object_type="test", object_id="1")
    assert client.get(f"/admin/compliance/auditevent/{event.pk}/change/").status_code == 200  # read-only view
    assert client.post(f"/admin/compliance/auditevent/{event.pk}/change/", {"summary": "x"}).status_code == 403
    assert client.post(f"/admin/compliance/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert AuditEvent.objects.get(pk=event.pk).summary == ""


def test_a_report_of_a_scripted_scenario_holds_every_kind_of_change(tmp_path, make_target, operator, approver, second_approver, admin_user, second_admin):
    start = timezone.now() - timedelta(minutes=1)
    root = tmp_path / "aicache"
    fill_store(root, 40)
    target = make_target(root, labels=["prod"])
    for code in ("fs.entry_schema", "fs.entry_corrupt", "fs.index_orphan", "fs.stray_file", "fs.entry_expired", "ai.poisoned_response"):
        INJECTORS[code](root)
    services.target_pass(target_id=target.pk, execute_inline=True)  # the orphan resync: auto-approved by policy
    by_code = {r.code: r for r in Repair.objects.all()}
    auto = by_code["fs.index_orphan"]
    assert auto.status == "succeeded"
    human = by_code["fs.entry_corrupt"]
    services.repair_approve(actor=approver, repair_id=human.pk, comment="corrupt: quarantine")
    services.repair_execute(repair_id=human.pk)
    rejected = by_code["fs.stray_file"]
    services.repair_reject(actor=approver, repair_id=rejected.pk, comment="that swap file is mine")
    expired = by_code["fs.entry_expired"]
    with override_settings(HEALING={**settings.HEALING, "APPROVAL_TTL_SECONDS": 1}):
        services.repair_approve(actor=approver, repair_id=expired.pk, comment="later")
        time.sleep(1.2)
        assert services.repair_execute(repair_id=expired.pk).state == "expired"
    rolled = by_code["ai.poisoned_response"]
    services.repair_approve(actor=second_approver, repair_id=rolled.pk, comment="poisoned")
    services.repair_execute(repair_id=rolled.pk)
    services.repair_rollback(actor=operator, repair_id=rolled.pk, reason="those answers were right after all")
    glass = by_code["fs.entry_schema"]
    services.change_freeze_create(actor=admin_user, label="prod", starts_at=timezone.now() - timedelta(seconds=5),
                                  ends_at=timezone.now() + timedelta(hours=1), reason="release")
    services.repair_break_glass(actor=admin_user, repair_id=glass.pk, justification="schema errors crash the client in production")
    services.repair_execute(repair_id=glass.pk)
    review = glass.review
    services.review_sign_off(actor=second_admin, review_id=review.pk, comment="was needed")
    checkpoint_take()

    row = report_generate(start=start, end=timezone.now() + timedelta(minutes=1), targets=[target.name], actor=admin_user)
    report = json.loads(Path(row.files["json"]["path"]).read_text())
    changes = {c["repair"]: c for c in report["changes"]}
    assert report["scope"]["targets"] == [target.name] and report["chain_verification"]["ok"] is True
    assert changes[auto.pk]["approvals"][0]["authority"] == "policy" and changes[auto.pk]["outcome"] == "succeeded"
    assert changes[auto.pk]["gate"]["authority"]["policy_version"] == 1
    assert [a["by"]["name"] for a in changes[human.pk]["approvals"]] == ["anna"] and changes[human.pk]["approvals"][0]["before_execution"]
    assert changes[human.pk]["verification"]["passed"] is True and changes[human.pk]["dry_run"]
    assert changes[rejected.pk]["outcome"] == "rejected" and changes[rejected.pk]["rejections"][0]["comment"] == "that swap file is mine"
    assert changes[expired.pk]["outcome"] == "expired" and changes[expired.pk]["implementation"] is None
    assert changes[rolled.pk]["outcome"] == "rolled back" and changes[rolled.pk]["rollback"]["by"] == "olga"
    assert changes[glass.pk]["emergency"]["justification"] == "schema errors crash the client in production"
    assert changes[glass.pk]["emergency"]["review"]["signed_off_by"] == "alma"
    assert [e["repair"] for e in report["emergency_changes"]] == [glass.pk]
    assert report["separation_of_duties_exceptions"] == []
    assert report["population"]["by_outcome"] == {"expired": 1, "rejected": 1, "rolled back": 1, "succeeded": 3}
    assert report["mttr_seconds"]["count"] >= 1 and report["mttd_seconds"]["count"] >= 1
    assert {"policy": "low risk: auto-approve", "version": 1} in report["policy_versions_in_force"]

    csv_text = Path(row.files["csv"]["path"]).read_text()
    assert csv_text.splitlines()[0].startswith("repair,target,code") and len(csv_text.splitlines()) == 7

    import pypdf

    pdf_text = "\n".join(page.extract_text() for page in pypdf.PdfReader(row.files["pdf"]["path"]).pages)
    for needle in ("change-management report", f"Repair #{glass.pk}", "EMERGENCY CHANGE by adam", "signed off by alma",
                   "Outcome: rolled back", "Outcome: expired", "chain intact"):
        assert needle in pdf_text, needle

    pub = tmp_path / "audit-public.pem"
    out = StringIO()
    call_command("compliance", "public-key", stdout=out)
    pub.write_text(out.getvalue())
    for fmt in ("json", "csv", "pdf"):
        ok = subprocess.run([sys.executable, "-m", "compliance.offline_verify", row.files[fmt]["path"], "--public-key", str(pub)],
                            cwd=ROOT, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
        assert ok.returncode == 0 and ok.stdout.startswith("valid:"), ok.stderr
    tampered = Path(row.files["csv"]["path"])
    tampered.write_text(tampered.read_text().replace("rejected", "succeeded", 1))
    bad = subprocess.run([sys.executable, "-m", "compliance.offline_verify", str(tampered), "--public-key", str(pub)], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 1 and "it was changed" in bad.stdout


def test_secrets_and_connection_passwords_never_enter_the_record_in_clear(store, make_target):
    INJECTORS["ai.secret_leak"](store)
    target = make_target(store)
    services.target_pass(target_id=target.pk)
    with audited_transaction():
        audit_append(actor=None, action="target.updated", object_type="target", object_id="x", summary="moved to redis://cache:s3cr3t-pw@10.0.0.5:6379/0",
                     after={"location": "redis://:s3cr3t-pw@10.0.0.5:6379/0", "password": "s3cr3t-pw"})
    everything = json.dumps([[e.summary, e.before, e.after] for e in AuditEvent.objects.all()], ensure_ascii=False)
    assert "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx0123" not in everything and "s3cr3t-pw" not in everything
    assert "openai_key:sk-p…#" in everything and "redacted:sha256:" in everything
