"""A worker killed with SIGKILL in the middle of a repair leaves a state a later task rolls back from
the journal: nothing lost, nothing half-applied, nothing run twice."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from compliance.models import AuditEvent
from healing import services
from healing.models import Repair
from tests.conftest import fill_store, snapshot
from tests.integration.celery_procs import start_beat, start_worker, wait_until


@pytest.mark.postgres_too
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_sigkill_mid_repair_is_rolled_back_from_the_journal(tmp_path, make_target, approver):
    root = tmp_path / "aicache"
    fill_store(root, 3000)
    now = time.time()
    for path in root.glob("*.json"):
        if path.name == ".index.json":
            continue
        entry = json.loads(path.read_text())
        entry["ttl_seconds"], entry["timestamp"] = 60, now - 7200  # every entry expired: one big quarantine
        path.write_text(json.dumps(entry, indent=2))
    index = json.loads((root / ".index.json").read_text())
    for record in index.values():
        record["created_at"] = now - 7200
    (root / ".index.json").write_text(json.dumps(index))
    target = make_target(root, check_interval_seconds=3600)
    services.target_pass(target_id=target.pk)
    repair = Repair.objects.get(code="fs.entry_expired")
    assert repair.status == "awaiting_approval" and repair.blast_entries == 3000
    before = snapshot(root)

    env = {"HEALING_TARGET_LEASE_SECONDS": "4"}
    (tmp_path / "w1").mkdir()
    worker = start_worker(tmp_path / "w1", **env)
    try:
        services.repair_approve(actor=approver, repair_id=repair.pk, comment="quarantine them")
        wait_until(lambda: Repair.objects.get(pk=repair.pk).workdir != "" and Path(Repair.objects.get(pk=repair.pk).workdir, "journal.jsonl").exists(),
                   what="the repair to start")
        journal = Path(Repair.objects.get(pk=repair.pk).workdir) / "journal.jsonl"
        wait_until(lambda: journal.read_text().count('"phase": "done"') >= 100, what="the repair to be under way")
        os.killpg(worker.popen.pid, signal.SIGKILL)
        worker.popen.wait()
    finally:
        worker.stop()
    done_at_kill = journal.read_text().count('"phase": "done"')
    assert 100 <= done_at_kill < 3000, "killed mid-repair"
    assert Repair.objects.get(pk=repair.pk).status == "running"
    assert snapshot(root) != before

    (tmp_path / "w2").mkdir()
    worker = start_worker(tmp_path / "w2", **env)
    beat = start_beat(tmp_path / "w2", **env)
    try:
        wait_until(lambda: Repair.objects.get(pk=repair.pk).status != "running", timeout=120, what="recovery")
    finally:
        beat.stop()
        worker.stop()
    repair.refresh_from_db()
    assert repair.status == "rolled_back" and repair.error.startswith("interrupted")
    assert snapshot(root) == before, "every quarantined entry and index record is back, byte-for-byte"
    assert AuditEvent.objects.filter(action="repair.started", object_id=str(repair.pk)).count() == 1
