"""For every SQLite check code: a cache written by its real client with exactly that fault injected is
detected under that code, repaired, verified, and rolled back on request; a damaged page is recovered
without losing a readable row; a file that is no LLM cache is refused with a clear message."""

from __future__ import annotations

import sqlite3

import pytest

from compliance.actors import Actor
from healing import services
from healing.catalog import CHECKS
from healing.choices import IssueStatus, RepairStatus
from healing.models import Issue, Repair
from tests.failure_injection.sqlite_faults import APP_CONNECTIONS, SQLITE_INJECTORS, page_damage
from tests.llm_clients import aicache_db, dump


@pytest.fixture(autouse=True)
def _close_app_connections():
    yield
    while APP_CONNECTIONS:
        APP_CONNECTIONS.pop().close()


def _target(path, options, name="sqlite-cache"):
    allowed = options.pop("allowed_models", [])
    return services.target_create(actor=Actor.system("test"), name=name, kind="sqlite", location=str(path), options=options, allowed_models=allowed)


def _db_of(root):
    return next(p for p in root.iterdir() if p.suffix == ".db" and not p.name.endswith(("-wal", "-shm")))


def _approve_all(repair, approver, second_approver):
    if repair.status == RepairStatus.AWAITING_APPROVAL:
        services.repair_approve(actor=approver, repair_id=repair.pk, comment="looks right")
        repair.refresh_from_db()
        if repair.status == RepairStatus.AWAITING_APPROVAL:
            services.repair_approve(actor=second_approver, repair_id=repair.pk, comment="agreed")


@pytest.mark.postgres_too
@pytest.mark.parametrize("code", sorted(SQLITE_INJECTORS))
def test_each_sqlite_fault_is_detected_repaired_verified_and_rolled_back(code, tmp_path, db, approver, second_approver, operator):
    root = tmp_path / "cache"
    root.mkdir()
    subjects, options = SQLITE_INJECTORS[code](root)
    path = _db_of(root)
    target = _target(path, dict(options))
    before_bytes = path.read_bytes()
    before_rows = dump(path) if code != "sqlite.integrity" else None

    report = services.target_pass(target_id=target.pk, trigger="test", execute_inline=False)

    found = {c: sorted(f.subject for f in fs) for c, fs in report.check.grouped.items()}
    assert set(found) == {code}, f"expected only {code}, got {found}"
    assert found[code] == sorted(subjects)
    issue = Issue.objects.get(target=target, code=code)
    repair = Repair.objects.get(issue=issue)
    assert repair.action == CHECKS[code].repair_for("sqlite")
    assert path.read_bytes() == before_bytes, "planning is a dry run"

    _approve_all(repair, approver, second_approver)
    outcome = services.repair_execute(repair_id=repair.pk)
    repair.refresh_from_db()
    assert outcome.state == "done"
    assert repair.status == RepairStatus.SUCCEEDED, (repair.error, repair.verification, repair.result)
    issue.refresh_from_db()
    assert issue.status == IssueStatus.RESOLVED, "the re-check after the repair no longer finds it"
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()

    services.repair_rollback(actor=operator, repair_id=repair.pk, reason="test the way back")
    repair.refresh_from_db()
    assert repair.status == RepairStatus.ROLLED_BACK
    if code in ("sqlite.integrity",):
        assert path.read_bytes() == before_bytes, "the damaged file comes back byte-for-byte"
    else:
        assert dump(path) == before_rows, "every row comes back, under its rowid, value for value"


def test_page_damage_is_recovered_without_losing_a_readable_row(tmp_path, db, approver):
    path = tmp_path / "cache.db"
    aicache_db(path, count=2000)
    page_damage(path)
    conn = sqlite3.connect(path)
    readable, unreadable = {}, 0
    for rowid in range(1, 2001):
        try:
            row = conn.execute("SELECT rowid, * FROM cache_entries WHERE rowid = ?", (rowid,)).fetchone()
        except sqlite3.DatabaseError:
            unreadable += 1
            continue
        if row is not None:
            readable[rowid] = row
    conn.close()
    assert 0 < len(readable) < 2000, "the damage hits some rows (they fail or vanish), not all"

    target = _target(path, {})
    report = services.target_pass(target_id=target.pk, execute_inline=False)
    assert "sqlite.integrity" in report.check.grouped
    repair = Repair.objects.get(code="sqlite.integrity")
    assert repair.risk == "high" and repair.status == RepairStatus.AWAITING_APPROVAL, "swapped in only after approval"
    services.repair_approve(actor=approver, repair_id=repair.pk, comment="recover it")
    services.repair_execute(repair_id=repair.pk)
    repair.refresh_from_db()
    assert repair.status == RepairStatus.SUCCEEDED, (repair.error, repair.verification)

    conn = sqlite3.connect(path)
    recovered = {row[0]: row for row in conn.execute("SELECT rowid, * FROM cache_entries")}
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    missing = [rowid for rowid in readable if recovered.get(rowid) != readable[rowid]]
    assert not missing, f"{len(missing)} readable rows were lost or changed"
    quarantined = list((tmp_path.parent).rglob("files/cache.db")) or list(__import__("pathlib").Path(repair.workdir).rglob("cache.db"))
    assert quarantined, "the damaged file is kept in the quarantine"


def test_a_file_that_is_no_llm_cache_is_refused_with_a_clear_message(tmp_path, db):
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    conn.commit()
    conn.close()
    target = _target(path, {})
    report = services.check_target(target_id=target.pk)
    assert report.run.status == "failed"
    assert "not an LLM cache this product knows" in report.run.error and "invoices" in report.run.error
    missing = _target(tmp_path / "nowhere.db", {}, name="missing")
    report = services.check_target(target_id=missing.pk)
    assert "target.unreachable" in report.grouped and "does not exist" in report.run.error


def test_vacuum_waits_for_the_maintenance_window(tmp_path, db, approver):
    root = tmp_path / "c"
    root.mkdir()
    _, _options = SQLITE_INJECTORS["sqlite.freelist_bloat"](root)
    path = _db_of(root)
    target = _target(path, {"maintenance_window": "00:00-00:00"})  # an empty window: never open
    services.target_pass(target_id=target.pk, execute_inline=False)
    repair = Repair.objects.get(code="sqlite.freelist_bloat")
    before = path.read_bytes()
    services.repair_approve(actor=approver, repair_id=repair.pk, comment="ok")
    services.repair_execute(repair_id=repair.pk)
    repair.refresh_from_db()
    assert repair.status == RepairStatus.SUPERSEDED
    assert "outside the maintenance window" in repair.result["skipped"][0]["reason"]
    assert path.read_bytes() == before


@pytest.mark.parametrize("layout", ["aicache", "langchain", "gptcache"])
def test_a_healthy_cache_of_each_layout_yields_no_issue(layout, tmp_path, db):
    from tests.llm_clients import gptcache_db, langchain_db

    path = tmp_path / "c.db"
    {"aicache": aicache_db, "langchain": langchain_db, "gptcache": gptcache_db}[layout](path, 50)
    report = services.check_target(target_id=_target(path, {}).pk)
    assert report.run.status == "healthy", report.grouped
    assert report.run.stats["layout"] == layout
