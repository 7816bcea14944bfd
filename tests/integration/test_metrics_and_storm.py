from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from compliance.models import AuditEvent
from healing import services
from healing.choices import RepairStatus
from healing.models import CacheTarget, Diagnosis, Issue, MetricSample, Repair
from tests.conftest import entry_names, fill_store, read_index


def _history(target, name: str, values: list[float], *, every: timedelta = timedelta(minutes=5)):
    start = timezone.now() - every * (len(values) + 1)
    MetricSample.objects.bulk_create([MetricSample(target=target, name=name, value=v, at=start + every * i) for i, v in enumerate(values)])


def test_a_metric_far_from_its_own_baseline_is_an_anomaly(tmp_path, make_target):
    root = tmp_path / "aicache"
    fill_store(root, 300)
    target = make_target(root)
    _history(target, "entries", [30, 31, 30, 32, 31, 30, 31, 30, 32, 31])
    report = services.check_target(target_id=target.pk)
    anomaly = report.grouped["perf.anomaly"][0]
    assert anomaly.subject == "entries" and anomaly.detail["direction"] == "up" and anomaly.detail["robust_z"] > 6
    # within its usual spread: nothing
    _history(target, "entries", [300, 301, 299, 300, 302, 300, 301, 299, 300, 301])
    MetricSample.objects.filter(target=target, name="entries", value__lt=100).delete()
    assert "perf.anomaly" not in services.check_target(target_id=target.pk).grouped


def test_growth_that_fills_the_disk_within_the_horizon_is_forecast(tmp_path, make_target):
    root = tmp_path / "aicache"
    fill_store(root, 10)
    target = make_target(root)
    # the store grew by 1 TiB an hour over the last samples
    _history(target, "bytes", [i * 2**40 / 12 for i in range(12)], every=timedelta(minutes=5))
    report = services.check_target(target_id=target.pk)
    forecast = report.grouped["fs.disk_forecast"][0]
    assert forecast.detail["hours_until_full"] < 72
    flat = make_target(root, name="flat")
    _history(flat, "bytes", [5000.0] * 12)
    assert "fs.disk_forecast" not in services.check_target(target_id=flat.pk).grouped


def test_storm_mode_stops_automation_until_a_person_clears_it(tmp_path, make_target, operator):
    root = tmp_path / "aicache"
    fill_store(root, 40)
    for name in entry_names(root)[:20]:
        (root / name).write_bytes(b"\x00\x00garbage")
    index = read_index(root)
    del index[entry_names(root)[30][:-5]]  # an orphan: a low-risk repair that would normally run by itself
    (root / ".index.json").write_text(json.dumps(index))
    target = make_target(root)
    report = services.target_pass(target_id=target.pk, execute_inline=True)
    target.refresh_from_db()
    assert target.storm_mode
    assert Diagnosis.objects.get(rule="systemic_failure").active
    assert not report.executed
    low = Repair.objects.get(code="fs.index_orphan")
    assert low.status == RepairStatus.AWAITING_APPROVAL and "storm" in low.gate_reason
    assert AuditEvent.objects.filter(action="target.storm_entered").count() == 1
    services.target_clear_storm(actor=operator, target_id=target.pk, comment="disk replaced")
    assert not CacheTarget.objects.get(pk=target.pk).storm_mode
    with pytest.raises(services.HealingError, match="not in storm mode"):
        services.target_clear_storm(actor=operator, target_id=target.pk)


def test_every_state_change_is_audited_in_its_transaction(store, make_target, approver):
    from tests.failure_injection.faults import INJECTORS

    INJECTORS["fs.entry_corrupt"](store)
    target = make_target(store)
    services.target_pass(target_id=target.pk)
    repair = Repair.objects.get()
    services.repair_approve(actor=approver, repair_id=repair.pk, comment="go")
    services.repair_execute(repair_id=repair.pk)
    actions = list(AuditEvent.objects.order_by("seq").values_list("action", flat=True))
    for expected in ["target.created", "check.started", "check.finished", "issue.opened", "diagnosis.made" if Diagnosis.objects.exists() else "issue.opened",
                     "repair.planned", "repair.gated", "repair.approved", "repair.started", "repair.applied", "repair.verified",
                     "repair.succeeded", "issue.resolved"]:
        assert expected in actions, expected
    seqs = list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1)), "gapless"
    approved = AuditEvent.objects.get(action="repair.approved")
    assert approved.actor_label == approver.username and approved.after["plan_hash"] == repair.plan_hash
    # a change whose transaction fails leaves no event
    before = AuditEvent.objects.count()
    with pytest.raises(services.HealingError):
        services.repair_approve(actor=approver, repair_id=repair.pk)
    assert AuditEvent.objects.count() == before
    assert Issue.objects.get(code="fs.entry_corrupt").status == "resolved"


def test_refusals_read_clearly(store, make_target, approver, viewer):
    from tests.failure_injection.faults import INJECTORS

    INJECTORS["fs.entry_corrupt"](store)
    target = make_target(store)
    services.target_pass(target_id=target.pk)
    repair = Repair.objects.get()
    with pytest.raises(services.AccessDenied, match="approver role is required"):
        services.repair_approve(actor=viewer, repair_id=repair.pk)
    with pytest.raises(services.HealingError, match="needs a comment"):
        services.repair_reject(actor=approver, repair_id=repair.pk, comment=" ")
    services.repair_reject(actor=approver, repair_id=repair.pk, comment="not now")
    with pytest.raises(services.HealingError, match="only a repair awaiting approval"):
        services.repair_approve(actor=approver, repair_id=repair.pk)
