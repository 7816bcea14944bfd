"""Bad stores and bad input get a clear message: never a crash, never a half-done change."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from healing import services
from healing.models import Issue
from tests.conftest import entry_names, fill_store

ROOT = Path(__file__).resolve().parents[2]


def test_a_missing_directory_is_reported_unreachable(tmp_path, make_target):
    target = make_target(tmp_path / "nowhere")
    report = services.check_target(target_id=target.pk)
    assert report.run.status == "failed"
    assert "does not exist" in report.run.error
    assert Issue.objects.get(code="target.unreachable").sample[0]["reason"].endswith("does not exist")


def test_a_file_instead_of_a_directory_is_reported_unreachable(tmp_path, make_target):
    (tmp_path / "afile").write_text("x")
    target = make_target(tmp_path / "afile")
    report = services.check_target(target_id=target.pk)
    assert "is not a directory" in report.run.error


def test_unreachable_does_not_resolve_other_issues_and_recovers(tmp_path, make_target):
    root = tmp_path / "aicache"
    fill_store(root, 10)
    from tests.failure_injection.faults import INJECTORS

    INJECTORS["fs.entry_corrupt"](root)
    target = make_target(root)
    services.check_target(target_id=target.pk)
    moved = tmp_path / "moved"
    root.rename(moved)
    services.check_target(target_id=target.pk)
    assert Issue.objects.get(code="fs.entry_corrupt").status == "open", "we could not look, so nothing is resolved"
    moved.rename(root)
    services.check_target(target_id=target.pk)
    assert Issue.objects.get(code="target.unreachable").status == "resolved"


def test_a_100_mb_garbage_file_and_a_garbage_index_do_not_crash_a_check(tmp_path, make_target):
    root = tmp_path / "aicache"
    fill_store(root, 10)
    garbage = os.urandom(1 << 20) * 100
    (root / ("e" * 64 + ".json")).write_bytes(garbage)
    (root / ".index.json").write_bytes(garbage)
    target = make_target(root, options={})
    from django.conf import settings
    from django.test import override_settings

    with override_settings(HEALING={**settings.HEALING, "MAX_ENTRY_BYTES": 16 * 1024 * 1024}):
        report = services.check_target(target_id=target.pk)
    assert report.run.status == "issues"
    assert [f.subject for f in report.grouped["fs.entry_corrupt"]] == ["e" * 64 + ".json"]
    assert "over the" in report.grouped["fs.entry_corrupt"][0].detail["reason"]
    assert report.grouped["fs.index_unreadable"][0].detail["reason"] == "not JSON"


def _manage(*args: str, env: dict, user: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "manage.py", *args]
    if user:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)


@pytest.mark.slow
def test_cli_as_the_cache_owner_reports_permission_denied_and_repairs_it(tmp_path):
    """The product runs as the cache's owner. As root nothing is denied, so this runs the CLI as an
    unprivileged user (nobody) on a store that user owns, with one entry it cannot read."""
    user = None
    home = tmp_path
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.fail("setpriv (util-linux) is needed to run the CLI as an unprivileged user")
        user = "65534"
        home = Path("/tmp") / f"healing-nobody-{os.getpid()}"
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(mode=0o755)
    try:
        store = home / "aicache"
        fill_store(store, 12)
        var = home / "var"
        var.mkdir()
        locked = entry_names(store)[2]
        if user:
            for path in [home, store, var, *store.iterdir()]:
                os.chown(path, 65534, 65534)
        os.chmod(store / locked, 0o000)
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "HEALING_VAR_DIR": str(var), "HEALING_GRACE_SECONDS": "0",
               "HEALING_DEMO": "0", "HEALING_REGISTER_HOME_CACHE": "0", "HEALING_LOG_FORMAT": "plain", "HOME": str(home)}
        env.pop("DATABASE_URL", None)
        assert _manage("migrate", "-v0", env=env, user=user).returncode == 0
        added = _manage("healing", "targets", "add", "mine", str(store), env=env, user=user)
        assert added.returncode == 0, added.stderr
        check = _manage("healing", "check", "mine", env=env, user=user)
        assert check.returncode == 1, check.stderr
        result = json.loads(check.stdout)
        unreadable = [i for i in result["issues"] if i["code"] == "fs.entry_unreadable"]
        assert unreadable and unreadable[0]["sample"][0]["subject"] == locked
        assert "ermission denied" in unreadable[0]["sample"][0]["reason"]
        healed = _manage("healing", "pass", "mine", env=env, user=user)
        assert healed.returncode == 0, healed.stdout + healed.stderr
        out = json.loads(healed.stdout)
        assert [r["status"] for r in out["executed"]] == ["succeeded"]
        assert out["check"]["status"] == "healthy"
        assert json.loads((store / locked).read_text())["key"] == locked[:-5]
    finally:
        if user:
            shutil.rmtree(home, ignore_errors=True)


def test_cli_exit_codes_fit_scripts(tmp_path, db):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "HEALING_VAR_DIR": str(tmp_path / "var"),
           "HEALING_GRACE_SECONDS": "0", "HEALING_DEMO": "0", "HEALING_REGISTER_HOME_CACHE": "0", "HEALING_LOG_FORMAT": "plain"}
    env.pop("DATABASE_URL", None)
    store = tmp_path / "aicache"
    fill_store(store, 5)
    assert _manage("migrate", "-v0", env=env).returncode == 0
    assert _manage("healing", "targets", "add", "good", str(store), env=env).returncode == 0
    assert _manage("healing", "targets", "add", "gone", str(tmp_path / "nothing"), env=env).returncode == 0
    healthy = _manage("healing", "check", "good", env=env)
    assert healthy.returncode == 0 and json.loads(healthy.stdout)["status"] == "healthy"
    (store / ".stale.json.tmp").write_text("x")
    assert _manage("healing", "check", "good", env=env).returncode == 1
    assert _manage("healing", "check", "gone", env=env).returncode == 2
    missing = _manage("healing", "check", "nope", env=env)
    assert missing.returncode != 0 and "no target named 'nope'" in missing.stderr
    bad = _manage("healing", "targets", "add", "Bad Name", str(store), env=env)
    assert bad.returncode != 0 and "must be a slug" in bad.stderr
    listed = _manage("healing", "targets", "list", "--json", env=env)
    assert {t["name"] for t in json.loads(listed.stdout)} == {"good", "gone"}
