"""For every file-store code: a store in the real aicache format with exactly that fault injected is
detected under that code, repaired, verified, and rolled back byte-for-byte on request."""

from __future__ import annotations

import pytest

from healing import services
from healing.catalog import CHECKS
from healing.choices import IssueStatus, RepairStatus
from healing.models import Issue, Repair
from tests.conftest import snapshot
from tests.failure_injection.faults import INJECTORS

REPAIRABLE = [code for code in INJECTORS if code != "fs.entry_unreadable"]


def _target_for(code, store, make_target):
    budget = None
    if code == "fs.size_budget":
        budget = sum(p.stat().st_size for p in store.iterdir() if p.name != ".index.json") - 1500
    return make_target(store, byte_budget=budget)


@pytest.mark.postgres_too
@pytest.mark.parametrize("code", sorted(REPAIRABLE))
def test_each_fault_is_detected_repaired_verified_and_rolled_back(code, store, make_target, approver, second_approver, operator):
    subjects = INJECTORS[code](store)
    target = _target_for(code, store, make_target)
    before = snapshot(store)

    report = services.target_pass(target_id=target.pk, trigger="test", execute_inline=False)

    found = {c: [f.subject for f in fs] for c, fs in report.check.grouped.items()}
    assert set(found) == {code}, f"expected only {code}, got {found}"
    if code != "fs.size_budget":
        assert found[code] == sorted(subjects)
    issue = Issue.objects.get(target=target, code=code)
    assert issue.subject_count == len(found[code])
    repair = Repair.objects.get(issue=issue)
    assert repair.action == CHECKS[code].repair
    assert snapshot(store) == before, "planning is a dry run: nothing may change before execution"

    if repair.status == RepairStatus.AWAITING_APPROVAL:
        services.repair_approve(actor=approver, repair_id=repair.pk, comment="looks right")
        repair.refresh_from_db()
        if repair.status == RepairStatus.AWAITING_APPROVAL:  # critical: a second pair of eyes
            services.repair_approve(actor=second_approver, repair_id=repair.pk, comment="agreed")
    outcome = services.repair_execute(repair_id=repair.pk)
    repair.refresh_from_db()
    assert outcome.state == "done"
    assert repair.status == RepairStatus.SUCCEEDED, (repair.error, repair.verification, repair.result)
    assert repair.verification["passed"] is True
    issue.refresh_from_db()
    assert issue.status == IssueStatus.RESOLVED, "the re-check after the repair no longer finds it"
    assert snapshot(store) != before

    services.repair_rollback(actor=operator, repair_id=repair.pk, reason="test the way back")
    repair.refresh_from_db()
    assert repair.status == RepairStatus.ROLLED_BACK
    assert snapshot(store) == before, "rollback restores the store byte-for-byte, modes included"


def test_a_repair_that_does_not_fix_the_fault_is_rolled_back_automatically(store, make_target):
    subjects = INJECTORS["fs.entry_unreadable"](store)
    target = make_target(store)
    before = snapshot(store)
    report = services.target_pass(target_id=target.pk, execute_inline=True)
    assert [f.subject for f in report.check.grouped["fs.entry_unreadable"]] == subjects
    repair = Repair.objects.get(code="fs.entry_unreadable")
    assert repair.risk == "low" and repair.status == RepairStatus.ROLLED_BACK
    assert "failed" in repair.error or "verification" in repair.error
    assert snapshot(store) == before
    assert Issue.objects.get(code="fs.entry_unreadable").status == IssueStatus.OPEN


def test_a_healthy_store_yields_no_issue(store, make_target):
    target = make_target(store)
    report = services.check_target(target_id=target.pk)
    assert report.run.status == "healthy"
    assert report.grouped == {}
    assert not Issue.objects.exists()


def test_issues_deduplicate_across_runs_and_resolve_when_gone(store, make_target):
    INJECTORS["fs.index_stale"](store)
    corrupt = INJECTORS["fs.entry_corrupt"](store)
    target = make_target(store)
    services.check_target(target_id=target.pk)
    services.check_target(target_id=target.pk)
    assert Issue.objects.filter(code="fs.entry_corrupt").count() == 1
    issue = Issue.objects.get(code="fs.entry_corrupt")
    assert issue.subject_count == 1 and issue.sample[0]["subject"] == corrupt[0]
    assert [row["subject"] for row in services.issue_subjects(issue)] == corrupt
    (store / corrupt[0]).unlink()
    services.check_target(target_id=target.pk)
    issue.refresh_from_db()
    assert issue.status == IssueStatus.RESOLVED and issue.resolved_at is not None
