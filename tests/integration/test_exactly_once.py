"""Exactly once: approvers clicking at the same moment, and a task delivered twice to two workers,
never execute a repair twice. Real concurrent database connections (threads), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import threading
from collections import Counter

import pytest
from django.conf import settings
from django.db import connection
from django.test import override_settings

from compliance.models import AuditEvent
from healing import services
from healing.models import Issue, Repair
from tests.conftest import fill_store, read_index


def attempts() -> int:
    """1,000 races on PostgreSQL (the claim that matters in production); 200 on SQLite, whose writers queue anyway."""
    default = "1000" if connection.vendor == "postgresql" else "200"
    return int(os.environ.get("HEALING_RACE_ATTEMPTS", default))


def _race(fn_a, fn_b):
    """Run two callables at the same instant in two threads, each with its own connection."""
    barrier = threading.Barrier(2)
    results: list = [None, None]

    def run(i, fn):
        try:
            barrier.wait()
            results[i] = fn()
        except Exception as exc:  # noqa: BLE001 - the race reports what each side saw
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(0, fn_a)), threading.Thread(target=run, args=(1, fn_b))]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    return results


def _orphan_store(tmp_path, count):
    root = tmp_path / "aicache"
    fill_store(root, count)
    (root / ".index.json").write_text(json.dumps({}))  # every entry an orphan: one low-risk repair each
    return root


@pytest.mark.postgres_too
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_repair_delivered_twice_runs_once(tmp_path, make_target):
    ATTEMPTS = attempts()
    root = _orphan_store(tmp_path, ATTEMPTS)
    target = make_target(root, options={"auto_repairs_per_hour": ATTEMPTS + 10})
    with override_settings(HEALING={**settings.HEALING, "SCAN_PARALLEL_MIN_ENTRIES": 10**9}):
        report = services.check_target(target_id=target.pk)
        issue = Issue.objects.get(code="fs.index_orphan")
        subjects = [f.subject for f in report.grouped["fs.index_orphan"]]
        repairs = [services.repair_plan(target=target, issue=issue, subjects=[s], enqueue=False) for s in subjects]
        assert {r.status for r in repairs} == {"approved"}
        outcomes = Counter()
        for repair in repairs:
            a, b = _race(lambda r=repair: services.repair_execute(repair_id=r.pk, run_check_after=False).state,
                         lambda r=repair: services.repair_execute(repair_id=r.pk, run_check_after=False).state)
            outcomes[tuple(sorted(map(str, (a, b))))] += 1
            # the loser of the race (busy: the lease was taken) is redelivered later and finds nothing to do
            if "busy" in (a, b):
                assert services.repair_execute(repair_id=repair.pk, run_check_after=False).state == "not_runnable"
    started = Counter(AuditEvent.objects.filter(action="repair.started").values_list("object_id", flat=True))
    ran_twice = sum(1 for n in started.values() if n > 1)
    print(f"\n{len(repairs)} repairs raced by two executors: outcomes {dict(outcomes)}; ran twice: {ran_twice}")
    assert ran_twice == 0
    assert len(started) == len(repairs)
    assert set(Repair.objects.values_list("status", flat=True)) == {"succeeded"}
    assert len(read_index(root)) == ATTEMPTS, "every orphan got its record once"


@pytest.mark.postgres_too
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_two_approvers_at_the_same_moment_approve_once(tmp_path, make_target, approver, second_approver):
    ATTEMPTS = attempts()
    root = tmp_path / "aicache"
    fill_store(root, 5)
    target = make_target(root)
    with override_settings(HEALING={**settings.HEALING, "SCAN_PARALLEL_MIN_ENTRIES": 10**9}):
        strays = []
        for i in range(ATTEMPTS):
            name = f".scratch-{i}.tmp"
            (root / name).write_text("x")
            strays.append(name)
        report = services.check_target(target_id=target.pk)
        issue = Issue.objects.get(code="fs.stray_file")
        repairs = [services.repair_plan(target=target, issue=issue, subjects=[s], enqueue=False) for s in sorted(f.subject for f in report.grouped["fs.stray_file"])]
    assert {r.status for r in repairs} == {"awaiting_approval"} and len(repairs) == ATTEMPTS
    refusals = Counter()
    for repair in repairs:
        a, b = _race(lambda r=repair: services.repair_approve(actor=approver, repair_id=r.pk, comment="a"),
                     lambda r=repair: services.repair_approve(actor=second_approver, repair_id=r.pk, comment="b"))
        errors = [str(x) for x in (a, b) if isinstance(x, Exception)]
        assert len(errors) == 1, (a, b)
        refusals[re.sub(r"#\d+", "#N", errors[0])] += 1
    transitions = Counter(AuditEvent.objects.filter(action="repair.approved", after__status="approved").values_list("object_id", flat=True))
    print(f"\n{ATTEMPTS} simultaneous double approvals: refusals {dict(refusals)}; approved twice: {sum(1 for n in transitions.values() if n > 1)}")
    assert len(transitions) == ATTEMPTS and max(transitions.values()) == 1
    assert set(Repair.objects.values_list("status", flat=True)) == {"approved"}
