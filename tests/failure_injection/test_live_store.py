"""The store is live: aicache keeps writing while we check and repair, with no lock."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compliance.actors import Actor
from healing import services
from healing.choices import RepairStatus
from healing.models import Repair, RepairPolicy
from tests.conftest import entry_names, fill_store, read_index
from tests.failure_injection.faults import INJECTORS


@pytest.mark.slow
def test_repairs_racing_a_live_writer_lose_nothing_it_wrote(tmp_path, make_target, settings):
    root = tmp_path / "aicache"
    fill_store(root, 200)
    corrupt = [INJECTORS["fs.entry_corrupt"](root)[0]]
    for name in entry_names(root)[10:40]:  # writer crashed mid-write on thirty entries
        data = (root / name).read_bytes()
        (root / name).write_bytes(data[:40])
        corrupt.append(name)
    index = read_index(root)
    for key in sorted(index)[50:80]:
        index[key]["access_count"] += 3  # lost index updates
    for key in sorted(index)[100:110]:
        del index[key]  # orphans
    (root / ".index.json").write_text(json.dumps(index))
    # prompts the writer uses: new ones and ones that collide with the corrupt entries' keys are impossible
    # to know (the prompt is not stored), so it writes its own keys plus rewrites healthy ones
    prompts = [f"live prompt {i}" for i in range(40)] + [f"prompt number {i}: explain topic {i}" for i in range(150, 200)]
    # this test is about losing nothing; the automation limits (rate limit, breaker) get out of its way
    target = make_target(root, labels=["race"], options={"auto_repairs_per_hour": 10**6})
    settings.HEALING = {**settings.HEALING, "BREAKER_FAILURES": 10**6}
    RepairPolicy.objects.create(name="race: auto everything", order=1, match_labels=["race"], decision="auto")
    log = tmp_path / "writer.json"
    proc = subprocess.Popen([sys.executable, "-m", "tests.live_writer", str(root), "6", str(log), *prompts],
                            cwd=Path(__file__).resolve().parents[2])
    passes = 0
    try:
        while proc.poll() is None:
            services.target_pass(target_id=target.pk, execute_inline=True, actor=Actor.system("test"))
            passes += 1
    finally:
        proc.wait(30)
    assert passes >= 2
    result = json.loads(log.read_text())
    assert result["operations"] > 100
    written = result["writes"]
    assert written, "the writer wrote"
    for key, answer in written.items():
        entry = json.loads((root / f"{key}.json").read_text())
        assert entry["value"] == answer, f"entry {key} lost the client's last write"
    assert Repair.objects.filter(status=RepairStatus.SUCCEEDED).exists()
    # once the writer has stopped, one more pass heals whatever the race left
    services.target_pass(target_id=target.pk, execute_inline=True)
    report = services.check_target(target_id=target.pk)
    assert report.grouped == {}, {c: len(f) for c, f in report.grouped.items()}
    final_index = read_index(root)
    for key in written:
        assert key in final_index


def test_a_repair_whose_subject_changed_after_planning_does_not_touch_it(store, make_target, approver):
    corrupt = INJECTORS["fs.entry_corrupt"](store)[0]
    target = make_target(store)
    services.target_pass(target_id=target.pk)
    repair = Repair.objects.get(code="fs.entry_corrupt")
    assert repair.status == RepairStatus.AWAITING_APPROVAL
    # the client rewrites the entry after the plan was made (and approved)
    fixed = json.dumps({"key": corrupt[:-5], "value": "rewritten by the client", "timestamp": time.time(),
                        "ttl_seconds": None, "access_count": 0, "last_accessed": time.time()}, indent=2)
    (store / corrupt).write_text(fixed)
    services.repair_approve(actor=approver, repair_id=repair.pk, comment="ok")
    services.repair_execute(repair_id=repair.pk)
    repair.refresh_from_db()
    assert repair.status == RepairStatus.SUPERSEDED
    assert repair.result["skipped"][0]["reason"] == "changed since the plan was approved"
    assert (store / corrupt).read_text() == fixed


def test_a_file_being_written_now_is_not_reported(tmp_path, make_target):
    root = tmp_path / "aicache"
    fill_store(root, 10)
    name = entry_names(root)[0]
    (root / name).write_bytes(b'{"key": "half-writ')  # mtime: now
    target = make_target(root, options={"grace_seconds": 60})
    report = services.check_target(target_id=target.pk)
    assert "fs.entry_corrupt" not in report.grouped
    assert report.run.settling >= 1
    import os

    old = time.time() - 120
    os.utime(root / name, (old, old))
    report = services.check_target(target_id=target.pk)
    assert [f.subject for f in report.grouped["fs.entry_corrupt"]] == [name]
