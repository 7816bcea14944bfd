"""The whole loop through a real Celery worker and beat: beat dispatches the pass, the worker checks,
diagnoses, plans and runs the low-risk repair; a human approves the medium one; the worker runs it."""

from __future__ import annotations

import pytest

from compliance.models import AuditEvent
from healing import services
from healing.choices import RepairStatus
from healing.models import CheckRun, Repair
from tests.conftest import read_index
from tests.failure_injection.faults import INJECTORS
from tests.integration.celery_procs import start_beat, start_worker, wait_until


@pytest.mark.postgres_too
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_beat_and_worker_run_the_loop_end_to_end(store, make_target, approver, tmp_path):
    orphan = INJECTORS["fs.index_orphan"](store)[0]
    corrupt = INJECTORS["fs.entry_corrupt"](store)[0]
    target = make_target(store, check_interval_seconds=3600)
    worker = start_worker(tmp_path)
    beat = start_beat(tmp_path)
    try:
        wait_until(lambda: Repair.objects.filter(code="fs.index_orphan", status=RepairStatus.SUCCEEDED).exists(), what="the auto-approved repair")
        assert CheckRun.objects.filter(target=target, trigger="schedule").exists(), "beat dispatched the pass"
        assert orphan[:-5] in read_index(store)
        corrupt_repair = Repair.objects.get(code="fs.entry_corrupt")
        assert corrupt_repair.status == RepairStatus.AWAITING_APPROVAL
        assert (store / corrupt).exists(), "a medium-risk repair waits for a person"

        services.repair_approve(actor=approver, repair_id=corrupt_repair.pk, comment="quarantine it")
        wait_until(lambda: Repair.objects.get(pk=corrupt_repair.pk).status in {RepairStatus.SUCCEEDED, RepairStatus.ROLLED_BACK}, what="the approved repair")
        corrupt_repair.refresh_from_db()
        assert corrupt_repair.status == RepairStatus.SUCCEEDED, corrupt_repair.error
        assert not (store / corrupt).exists()
        from pathlib import Path

        assert (Path(corrupt_repair.workdir) / "files" / corrupt).exists(), "quarantined, not deleted"
        assert AuditEvent.objects.filter(action="repair.succeeded", object_id=str(corrupt_repair.pk)).count() == 1
    finally:
        beat.stop()
        worker.stop()
