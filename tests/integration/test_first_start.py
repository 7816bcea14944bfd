"""What a newcomer gets from `scripts/start`'s first start (`manage.py healing bootstrap`): an admin account
with its password printed, and two clearly labelled demo stores whose injected faults one pass of the loop
finds, explains and — where policy allows — repairs."""

from __future__ import annotations

import io

from django.contrib.auth import get_user_model
from django.core.management import call_command

from healing import services
from healing.choices import RepairStatus
from healing.models import CacheTarget, Diagnosis, Issue, Repair


def _bootstrap() -> str:
    out = io.StringIO()
    call_command("healing", "bootstrap", stdout=out)
    return out.getvalue()


def test_first_start_makes_an_admin_and_demo_stores_that_show_the_whole_loop(settings, tmp_path, db):
    settings.VAR_DIR = tmp_path
    settings.HEALING = {**settings.HEALING, "DEMO": True, "DEMO_DIR": tmp_path / "demo-store", "GRACE_SECONDS": 60.0}
    printed = _bootstrap()

    password = (tmp_path / "initial-admin-password").read_text().strip()
    assert f"user: admin    password: {password}" in printed
    assert get_user_model().objects.get(username="admin").check_password(password)
    demos = {t.name: t for t in CacheTarget.objects.filter(is_demo=True)}
    assert sorted(demos) == ["demo-injected-faults", "demo-sqlite-injected-faults"]
    assert all("DEMO" in t.description and t.labels == ["demo"] for t in demos.values())

    for target in demos.values():
        services.target_pass(target_id=target.pk, trigger="test", execute_inline=True)
    found = {name: {i.code: i.subject_count for i in Issue.objects.filter(target=t)} for name, t in demos.items()}
    assert set(found["demo-injected-faults"]) == {"fs.entry_corrupt", "ai.poisoned_response", "fs.entry_expired", "fs.index_orphan",
                                                  "fs.index_dangling", "fs.index_stale", "ai.secret_leak", "fs.stray_file"}, found
    assert found["demo-sqlite-injected-faults"] == {"ai.poisoned_response": 3, "ai.stale_model": 4, "ai.duplicate_entries": 1,
                                                    "ai.secret_leak": 1, "sqlite.row_undecodable": 1}, found

    rules = set(Diagnosis.objects.filter(active=True).values_list("target__name", "rule"))
    assert {("demo-injected-faults", "writer_crash_mid_write"), ("demo-injected-faults", "provider_outage_cached"),
            ("demo-sqlite-injected-faults", "provider_outage_cached")} <= rules, rules
    # the low-risk index repairs ran and verified themselves; quarantines wait for a person
    done = {(r.code, r.status) for r in Repair.objects.filter(target__is_demo=True)}
    assert ("fs.index_orphan", RepairStatus.SUCCEEDED) in done and ("fs.index_dangling", RepairStatus.SUCCEEDED) in done, done
    waiting = set(Repair.objects.filter(status=RepairStatus.AWAITING_APPROVAL).values_list("target__name", "code"))
    assert {("demo-injected-faults", "fs.entry_corrupt"), ("demo-sqlite-injected-faults", "ai.poisoned_response")} <= waiting, waiting


def test_a_second_start_adds_nothing_and_a_deleted_demo_stays_deleted(settings, tmp_path, db):
    settings.VAR_DIR = tmp_path
    settings.HEALING = {**settings.HEALING, "DEMO": True, "DEMO_DIR": tmp_path / "demo-store"}
    _bootstrap()
    _bootstrap()
    assert CacheTarget.objects.filter(is_demo=True).count() == 2
    assert get_user_model().objects.filter(is_superuser=True).count() == 1
    CacheTarget.objects.filter(name="demo-sqlite-injected-faults").delete()
    _bootstrap()
    assert list(CacheTarget.objects.filter(is_demo=True).values_list("name", flat=True)) == ["demo-injected-faults"]
