"""For every Redis check code: a cache written by its real clients on a real redis-server with exactly
that fault injected is detected under that code; where the code has a repair, it is repaired, verified,
and rolled back on request to the exact keys, values and TTLs."""

from __future__ import annotations

import pytest

from compliance.actors import Actor
from healing import services
from healing.catalog import CHECKS
from healing.choices import IssueStatus, RepairStatus
from healing.models import Issue, Repair
from tests.failure_injection.redis_faults import REDIS_INJECTORS


def keyspace(client) -> dict[bytes, tuple[object, bool]]:
    """Every key: its value (a hash's fields, or the DUMP payload of other types) and whether it expires."""
    out = {}
    for key in client.scan_iter(count=500):
        value = client.hgetall(key) if client.type(key) == b"hash" else client.dump(key)
        out[key] = (value, client.pttl(key) > 0)
    return out


def _target(url, fault, name="redis-cache"):
    return services.target_create(actor=Actor.system("test"), name=name, kind="redis", location=url, options=fault.options,
                                  allowed_models=fault.allowed_models)


@pytest.mark.parametrize("code", sorted(c for c in REDIS_INJECTORS if c != "redis.fragmentation"))
def test_each_redis_fault_is_detected_and_repaired_or_reported(code, redis_srv, db, approver, second_approver, operator):
    client = redis_srv.client()
    fault = REDIS_INJECTORS[code](redis_srv, client)
    target = _target(redis_srv.url, fault)
    if fault.after_baseline:
        baseline = services.check_target(target_id=target.pk)
        assert code not in baseline.grouped, "the first check only learns where the counters stand"
        fault.after_baseline()
    before = keyspace(client)

    report = services.target_pass(target_id=target.pk, trigger="test", execute_inline=False)

    found = {c: sorted(f.subject for f in fs) for c, fs in report.check.grouped.items()}
    assert set(found) == {code}, f"expected only {code}, got {found}"
    assert found[code] == sorted(fault.subjects)
    issue = Issue.objects.get(target=target, code=code)
    action = CHECKS[code].repair_for("redis")
    if action is None:
        assert not Repair.objects.filter(issue=issue).exists(), "a check without a repair is for a person to act on"
        assert keyspace(client) == before
        return
    repair = Repair.objects.get(issue=issue)
    assert repair.action == action
    assert keyspace(client) == before, "planning is a dry run"
    if repair.status == RepairStatus.AWAITING_APPROVAL:
        services.repair_approve(actor=approver, repair_id=repair.pk, comment="looks right")
        repair.refresh_from_db()
        if repair.status == RepairStatus.AWAITING_APPROVAL:
            services.repair_approve(actor=second_approver, repair_id=repair.pk, comment="agreed")
    services.repair_execute(repair_id=repair.pk)
    repair.refresh_from_db()
    assert repair.status == RepairStatus.SUCCEEDED, (repair.error, repair.verification, repair.result)
    issue.refresh_from_db()
    assert issue.status == IssueStatus.RESOLVED

    policy_before = client.config_get("maxmemory-policy")
    services.repair_rollback(actor=operator, repair_id=repair.pk, reason="test the way back")
    repair.refresh_from_db()
    assert repair.status == RepairStatus.ROLLED_BACK
    assert keyspace(client) == before, "every key back with its exact payload, and its TTL state"
    if action == "set_eviction_policy":
        assert policy_before == {"maxmemory-policy": "allkeys-lru"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}


def test_a_healthy_redis_cache_yields_no_issue(redis_srv, db):
    from tests.failure_injection.redis_faults import Fault, _healthy

    _healthy(redis_srv.client())
    target = _target(redis_srv.url, Fault([]))
    for _ in range(2):
        report = services.check_target(target_id=target.pk)
        assert report.run.status == "healthy", report.grouped
    assert report.run.stats["entries"] == 50


def test_an_unreachable_redis_is_reported_not_crashed(db):
    from tests.redis_server import free_port

    target = services.target_create(actor=Actor.system("test"), name="nowhere", kind="redis", location=f"redis://:s3cret@127.0.0.1:{free_port()}/0")
    assert target.location.endswith(f"****@127.0.0.1:{target.location.rsplit(':', 1)[1]}") and "s3cret" not in target.location
    assert target.secret and "s3cret" not in target.secret, "the password is stored encrypted"
    report = services.check_target(target_id=target.pk)
    assert report.run.status == "failed"
    assert "target.unreachable" in report.grouped and "cannot connect" in report.run.error


def test_fragmentation_is_found_and_a_purge_that_does_not_cure_it_is_not_called_a_success(redis_srv, db):
    """MEMORY PURGE returns dirty pages; it cannot compact pages that still hold live values (that needs
    active defragmentation, which Debian's jemalloc lacks, or a restart). Verification says so."""
    client = redis_srv.client()
    fault = REDIS_INJECTORS["redis.fragmentation"](redis_srv, client)
    target = _target(redis_srv.url, fault)
    before = keyspace(client)
    report = services.target_pass(target_id=target.pk, execute_inline=True)
    assert sorted(report.check.grouped) == ["redis.fragmentation"]
    repair = Repair.objects.get(code="redis.fragmentation")
    assert repair.action == "memory_purge" and repair.risk == "low"
    assert repair.status == RepairStatus.ROLLED_BACK and repair.verification["still_failing"] == ["server"]
    assert Issue.objects.get(code="redis.fragmentation").status == IssueStatus.OPEN
    assert keyspace(client) == before, "a purge changes no data"


def test_a_password_typed_into_the_admin_is_stored_encrypted_and_used(redis_srv, db, client):
    from tests.conftest import _user

    root = _user("root", superuser=True)
    client.force_login(root)
    redis_srv.client().config_set("requirepass", "pw-Zq8x")
    try:
        url = redis_srv.url.replace("redis://", "redis://:pw-Zq8x@")
        response = client.post("/admin/healing/cachetarget/add/", {
            "name": "prod-redis", "kind": "redis", "location": url, "description": "", "labels": "[]", "enabled": "on",
            "check_interval_seconds": 300, "allowed_models": "[]", "options": "{}", "breaker_reason": "",
        })
        assert response.status_code == 302, response.content.decode()[:2000]
        from healing.models import CacheTarget

        target = CacheTarget.objects.get(name="prod-redis")
        assert "pw-Zq8x" not in target.location and "****" in target.location and "pw-Zq8x" not in target.secret
        report = services.check_target(target_id=target.pk)
        assert report.run.status == "healthy", (report.run.error, dict(report.grouped))  # the backend got the password back
        bad = client.post("/admin/healing/cachetarget/add/", {"name": "bad", "kind": "redis", "location": "http://nope", "labels": "[]",
                                                             "check_interval_seconds": 300, "allowed_models": "[]", "options": "{}"})
        assert bad.status_code == 200 and "a Redis target needs a URL" in bad.content.decode()
    finally:
        authed = redis_srv.client()
        authed.connection_pool.connection_kwargs["password"] = "pw-Zq8x"
        authed.config_set("requirepass", "")


@pytest.mark.parametrize("refused", ["-@scripting", "-@scripting +script|load"], ids=["no-scripts", "load-but-not-run"])
def test_a_user_whose_acl_refuses_scripts_gets_the_same_findings(refused, redis_srv, db):
    """A full check reads keys with a server-side script; a locked-down ACL user is read with plain
    commands instead, and nothing is missed either way."""
    import hashlib

    import redis

    client = redis_srv.client()
    expected = {}
    for code in ("ai.poisoned_response", "ai.secret_leak", "redis.keys_without_ttl", "redis.entry_undecodable"):
        expected[code] = REDIS_INJECTORS[code](redis_srv, client).subjects  # each rewrites the healthy keys: the torn one last
    wrong_type = hashlib.md5(b"a string where LangChain keeps a hash").hexdigest()
    client.set(wrong_type, "plain text", ex=3600)
    expected["redis.entry_undecodable"] = sorted([*expected["redis.entry_undecodable"], wrong_type])
    client.execute_command("ACL", "SETUSER", "noscripts", "on", ">pw-nolua", "~*", "&*", "+@all", *refused.split())
    locked_url = redis_srv.url.replace("redis://", "redis://noscripts:pw-nolua@")
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            redis.Redis.from_url(locked_url).eval("return 1", 0)
        for name, url in (("default-user", redis_srv.url), ("locked-user", locked_url)):
            # small SCAN batches: the refusal is met while the next batch's reads are already on the wire
            target = services.target_create(actor=Actor.system("test"), name=name, kind="redis", location=url, options={"scan_batch": 10})
            report = services.check_target(target_id=target.pk)
            assert {c: sorted(f.subject for f in fs) for c, fs in report.grouped.items()} == expected, name
            undecodable = {f.subject: f.detail["why"] for f in report.grouped["redis.entry_undecodable"]}
            assert "not a hash" in undecodable[wrong_type]
    finally:
        client.execute_command("ACL", "DELUSER", "noscripts")


def test_scheduled_checks_keep_under_the_targets_scan_rate(redis_srv, db):
    """Continuous monitoring is paced (SCAN in small batches, at most `scan_keys_per_second`); only a check
    someone asked for runs at full speed. A lower bound on the time taken, so never flaky."""
    import time

    from tests.llm_clients import langchain_redis

    langchain_redis(redis_srv.client(), 1000)
    target = services.target_create(actor=Actor.system("test"), name="paced", kind="redis", location=redis_srv.url,
                                    options={"scan_keys_per_second": 400, "scan_batch": 250})
    started = time.monotonic()
    report = services.check_target(target_id=target.pk, trigger="schedule")
    elapsed = time.monotonic() - started
    assert report.run.status == "healthy" and report.run.stats["entries"] == 1000
    assert elapsed >= 1.5, f"1,000 keys at 400 keys/s took {elapsed:.2f} s: the pace was not kept"


def test_a_tls_redis_with_a_password_is_checked_and_a_wrong_ca_is_a_clear_refusal(tmp_path, db):
    from tests.llm_clients import langchain_redis, langchain_redis_key
    from tests.redis_server import RedisServer, self_signed_cert

    server = RedisServer(tmp_path / "tls", tls=True, password="tls-Pw9")
    try:
        langchain_redis(server.client(), 20)
        langchain_redis(server.client(), 1, ttl=None, start=50)
        target = services.target_create(actor=Actor.system("test"), name="tls-cache", kind="redis", location=server.url)
        assert target.location.startswith("rediss://") and "tls-Pw9" not in target.location
        report = services.check_target(target_id=target.pk)
        assert report.run.status == "issues", report.run.error
        assert {c: [f.subject for f in fs] for c, fs in report.grouped.items()} == {
            "redis.keys_without_ttl": [langchain_redis_key("prompt number 50: explain topic 50")]}

        other_ca, _ = self_signed_cert(tmp_path)
        wrong = services.target_create(actor=Actor.system("test"), name="tls-wrong-ca", kind="redis",
                                       location=server.url.replace(str(server.ca_cert), str(other_ca)))
        report = services.check_target(target_id=wrong.pk)
        assert report.run.status == "failed" and "target.unreachable" in report.grouped
        assert "certificate verify failed" in report.run.error, report.run.error
    finally:
        server.stop()
