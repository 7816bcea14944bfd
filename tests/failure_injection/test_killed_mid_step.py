"""A worker killed at the worst instant of a step — its subject renamed aside, not yet removed or
swapped — leaves nothing behind once recovery has rolled the repair back: the store is byte-for-byte as
it was. The kill is real (SIGKILL of a forked process running the repair), at a chosen point."""

from __future__ import annotations

import os
import signal
import time

import pytest
from django.conf import settings
from django.db import connections
from django.test import override_settings

from healing import services
from healing.models import Repair
from tests.conftest import snapshot
from tests.failure_injection.faults import INJECTORS

# (fault, the call that follows the rename aside, and how to recognise it)
STEPS = {
    "quarantine": ("fs.entry_expired", "unlink", ".healing-q-"),  # take_out: renamed aside, compared, then unlinked
    "rewrite": ("fs.entry_key_mismatch", "link", ".healing-s-"),  # swap_in: original renamed aside, new bytes linked in
}


def _run_and_die_at(repair_id: int, call: str, marker: str) -> None:
    """In a forked child: run the repair and SIGKILL this process when `os.<call>` touches `marker`."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            connections.close_all()  # the child's own database connections
            real = getattr(os, call)

            def deadly(src, *args, **kwargs):
                if marker in os.fspath(src):
                    os.kill(os.getpid(), signal.SIGKILL)
                return real(src, *args, **kwargs)

            setattr(os, call, deadly)
            services.repair_execute(repair_id=repair_id)
        finally:
            os._exit(3)  # reached only if the kill point was never hit
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"the child was not killed at the step (status {status})"


@pytest.mark.postgres_too
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("step", sorted(STEPS))
def test_a_step_killed_half_way_is_undone_without_a_trace(step, store, make_target, approver):
    code, call, marker = STEPS[step]
    INJECTORS[code](store)
    target = make_target(store)
    with override_settings(HEALING={**settings.HEALING, "TARGET_LEASE_SECONDS": 1}):
        services.target_pass(target_id=target.pk)
        repair = Repair.objects.get(code=code)
        if repair.status == "awaiting_approval":
            services.repair_approve(actor=approver, repair_id=repair.pk, comment="go")
        before = snapshot(store)
        connections.close_all()
        _run_and_die_at(repair.pk, call, marker)

        repair.refresh_from_db()
        assert repair.status == "running"
        left = [name for name in os.listdir(store) if ".healing-" in name]
        assert left, "the kill landed with the subject set aside (the window this test is about)"
        time.sleep(1.2)  # the dead worker's lease lapses
        recovered = services.repair_recover(repair_id=repair.pk)
    assert recovered is not None and recovered.status == "rolled_back", repair.error
    assert snapshot(store) == before, f"left behind: {sorted(set(snapshot(store)) - set(before))}"
