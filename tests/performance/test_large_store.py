"""Correctness at scale (not timing: speed is measured by bench/fs_scan.py)."""

from __future__ import annotations

import hashlib
import json
import os
import time

import pytest

from healing import services


@pytest.mark.slow
def test_a_healthy_store_of_100000_entries_yields_no_issue_and_a_rescan_reads_only_changes(tmp_path, make_target):
    root = tmp_path / "aicache"
    root.mkdir(mode=0o700)
    now = time.time() - 3600
    index = {}
    for i in range(100_000):
        prompt = f"prompt {i}"
        key = hashlib.sha256(prompt.encode()).hexdigest()
        value = f"answer {i} " * 10
        (root / f"{key}.json").write_text(json.dumps({"key": key, "value": value, "timestamp": now, "ttl_seconds": None,
                                                      "access_count": 0, "last_accessed": now}, indent=2))
        index[key] = {"created_at": now, "last_accessed": now, "access_count": 0, "prompt_preview": prompt, "response_length": len(value)}
    (root / ".index.json").write_text(json.dumps(index))
    target = make_target(root)
    first = services.check_target(target_id=target.pk)
    assert first.run.status == "healthy", {c: len(f) for c, f in first.grouped.items()}
    assert first.run.entries_scanned == 100_000 and first.run.files_read == 100_000
    changed = next(iter(index))
    path = root / f"{changed}.json"
    path.write_text(path.read_text().replace('"value"', '"value"'))
    os.utime(path, (now + 1, now + 1))
    second = services.check_target(target_id=target.pk)
    assert second.run.status == "healthy"
    assert second.run.files_read == 1, "unchanged entries are only stat()ed"
