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


@pytest.fixture(params=["filesystem", "redis"])
def broker(request):
    """The embedded broker (kombu's filesystem transport), and Redis as production runs it: the worker,
    beat and this process (which enqueues after commit) all switched to the session's redis-server."""
    if request.param == "filesystem":
        yield {}
        return
    import kombu.pools
    import redis

    from config.celery import app

    url = request.getfixturevalue("redis_server").url.rsplit("/", 1)[0] + "/15"
    redis.Redis.from_url(url).flushdb()  # the test's own server: an empty queue
    saved = app.conf.broker_url, app.conf.broker_transport_options

    def use(broker_url, options):
        app.conf.broker_url, app.conf.broker_transport_options = broker_url, options
        # close and forget every connection and producer pool (kombu keeps a registry of them), so that
        # the next enqueue, in this test or a later one, connects to the broker now configured
        kombu.pools.reset()
        app._pool = None
        app.amqp._producer_pool = None

    use(url, {})
    try:
        yield {"CELERY_BROKER_URL": url}
    finally:
        use(*saved)


@pytest.mark.postgres_too
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_beat_and_worker_run_the_loop_end_to_end(broker, store, make_target, approver, tmp_path):
    orphan = INJECTORS["fs.index_orphan"](store)[0]
    corrupt = INJECTORS["fs.entry_corrupt"](store)[0]
    target = make_target(store, check_interval_seconds=3600)
    worker = start_worker(tmp_path, **broker)
    beat = start_beat(tmp_path, **broker)
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
        if broker:
            assert "redis://" in worker.log.read_text() and "filesystem://" not in worker.log.read_text(), "the worker used the Redis broker"
    finally:
        beat.stop()
        worker.stop()
