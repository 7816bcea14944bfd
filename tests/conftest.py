"""Shared personas and stores. Stores are written the way aicache writes them (tests/aicache_client.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from compliance.actors import Actor
from healing import services
from tests.aicache_client import CoreCache

ANSWER = "A careful, complete answer about {topic}, with an example and a caveat."


def _user(username: str, *roles: str, superuser: bool = False):
    """A persona: a user in one or more role groups (created by the roles migration)."""
    from django.contrib.auth.models import Group

    from healing.roles import ensure_roles

    ensure_roles(Group, Permission)
    User = get_user_model()
    if superuser:
        return User.objects.create_superuser(username, f"{username}@example.test", "pw-" + username)
    user = User.objects.create_user(username, f"{username}@example.test", "pw-" + username)
    user.groups.set(Group.objects.filter(name__in=roles))
    return get_user_model().objects.get(pk=user.pk)  # fresh: no stale permission cache


@pytest.fixture
def operator(db):
    return _user("olga", "operator")


@pytest.fixture
def approver(db):
    return _user("anna", "approver", "operator")


@pytest.fixture
def second_approver(db):
    return _user("bert", "approver")


@pytest.fixture
def viewer(db):
    return _user("vera", "viewer")


@pytest.fixture
def admin_user(db):
    return _user("adam", "admin")


@pytest.fixture
def second_admin(db):
    return _user("alma", "admin")


def fill_store(root: Path, count: int = 30, *, start: int = 0) -> CoreCache:
    cache = CoreCache(root)
    for i in range(start, start + count):
        cache.set(f"prompt number {i}: explain topic {i}", ANSWER.format(topic=i), context={"model": "gpt-4o-mini"})
    return cache


@pytest.fixture
def store(tmp_path) -> Path:
    root = tmp_path / "aicache"
    fill_store(root)
    os.chmod(root, 0o700)
    return root


@pytest.fixture
def make_target(db):
    def make(root: Path, name: str = "store", **kwargs):
        return services.target_create(actor=Actor.system("test"), name=name, location=str(root), **kwargs)

    return make


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file in the store: bytes and mode."""
    out = {}
    for path in sorted(root.iterdir()):
        if path.is_symlink():
            out[path.name] = (os.readlink(path).encode(), -1)
        elif path.is_dir():
            out[path.name + "/"] = (b"", path.stat().st_mode & 0o7777)
        elif path.is_file():
            out[path.name] = (path.read_bytes(), path.stat().st_mode & 0o7777)
    out["."] = (b"", root.stat().st_mode & 0o7777)
    return out


def entry_names(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.endswith(".json") and p.name != ".index.json")


def read_index(root: Path) -> dict:
    return json.loads((root / ".index.json").read_text())


@pytest.fixture(autouse=True)
def _default_policies(request):
    """Transactional tests flush every table, data migrations included: put the defaults back."""
    if not {"db", "transactional_db"} & set(request.fixturenames) and not request.node.get_closest_marker("django_db"):
        return
    request.getfixturevalue("db") if "transactional_db" not in request.fixturenames else None
    from healing.models import RepairPolicy
    from healing.policies import ensure_default_policies

    ensure_default_policies(RepairPolicy)


@pytest.fixture(autouse=True)
def _own_checkpoint_dir(settings, tmp_path):
    """Each test's database starts empty, so each gets its own directory of checkpoint copies."""
    settings.COMPLIANCE = {**settings.COMPLIANCE, "CHECKPOINT_DIR": tmp_path / "checkpoints", "REPORT_DIR": tmp_path / "reports"}
    # targets get the same primary keys in every test: their scan state (Redis counters, ...) must not leak
    settings.HEALING = {**settings.HEALING, "STATE_DIR": tmp_path / "state"}


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    from tests.redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_srv(redis_server):
    """The session's redis-server, emptied and reset for this test."""
    redis_server.reset()
    return redis_server
