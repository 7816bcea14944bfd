"""A Redis that goes away mid-check or mid-repair (the process frozen: no answer, as in a partition)
leaves no half-applied repair: the check fails cleanly, the repair stays pending with its journal, and
once the server answers again the recovery sweep rolls it back to the exact keys it found."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from compliance.actors import Actor
from healing import services
from healing.models import Issue, Repair
from tests.integration.test_redis_codes import keyspace
from tests.llm_clients import langchain_redis, llm_string


def _frozen(server):
    class Frozen:
        def __enter__(self):
            os.kill(server.proc.pid, signal.SIGSTOP)

        def __exit__(self, *exc):
            os.kill(server.proc.pid, signal.SIGCONT)

    return Frozen()


@pytest.mark.django_db(transaction=True)
def test_redis_frozen_mid_repair_is_rolled_back_once_it_answers(redis_srv, approver):
    from langchain_community.cache import RedisCache
    from langchain_core.outputs import Generation

    client = redis_srv.client()
    langchain_redis(client, 8000)
    cache = RedisCache(redis_=client, ttl=3600)
    pipe_prompts = [f"outage prompt {i}" for i in range(2000)]
    for prompt in pipe_prompts:  # a provider outage cached as answers: one big quarantine
        cache.update(prompt, llm_string("gpt-4o-mini"), [Generation(text="503 Service Unavailable: the server is overloaded")])
    target = services.target_create(actor=Actor.system("test"), name="redis", kind="redis", location=redis_srv.url,
                                    options={"socket_timeout": 1.0}, check_interval_seconds=3600)
    services.target_pass(target_id=target.pk)
    repair = Repair.objects.get(code="ai.poisoned_response")
    services.repair_approve(actor=approver, repair_id=repair.pk, comment="drop the outage answers")
    before = keyspace(client)

    worker = threading.Thread(target=services.repair_execute, kwargs={"repair_id": repair.pk})
    worker.start()
    journal = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        repair.refresh_from_db()
        if repair.workdir and (Path(repair.workdir) / "journal.jsonl").exists():
            journal = Path(repair.workdir) / "journal.jsonl"
            if journal.read_text().count('"phase": "done"') >= 2:
                break
        time.sleep(0.005)
    assert journal is not None, "the repair started"
    with _frozen(redis_srv):
        worker.join(timeout=60)
        repair.refresh_from_db()
        assert repair.status == "running", "a rollback that could not reach the server stays pending"
        assert "rollback pending" in repair.error
        assert repair.pk in services.interrupted_repairs()
        assert services.repair_recover(repair_id=repair.pk) is None, "while the server is away the rollback keeps waiting"
    done = sum(1 for line in journal.read_text().splitlines() if '"phase": "done"' in line)
    assert done >= 2, "the freeze caught the repair half-way"

    recovered = services.repair_recover(repair_id=repair.pk)
    assert recovered is not None and recovered.status == "rolled_back"
    assert keyspace(client) == before, "every quarantined key is back, value and TTL"


@pytest.mark.django_db(transaction=True)
def test_redis_frozen_during_a_check_fails_the_run_cleanly(redis_srv):
    langchain_redis(redis_srv.client(), 50)
    target = services.target_create(actor=Actor.system("test"), name="redis", kind="redis", location=redis_srv.url,
                                    options={"socket_timeout": 0.5})
    with _frozen(redis_srv):
        report = services.check_target(target_id=target.pk)
    assert report.run.status == "failed" and "did not answer in time" in report.run.error
    assert Issue.objects.get(code="target.unreachable").status == "open"
    report = services.check_target(target_id=target.pk)
    assert report.run.status == "healthy"
    assert Issue.objects.get(code="target.unreachable").status == "resolved"
