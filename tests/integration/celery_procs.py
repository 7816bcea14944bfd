"""Real Celery processes for integration tests: a worker and beat on the real (filesystem or
configured) broker, sharing the test database."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def database_url() -> str:
    sd = connection.settings_dict
    if sd["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{sd['NAME']}"
    return f"postgres://{sd['USER']}:{sd['PASSWORD']}@{sd['HOST'] or '127.0.0.1'}:{sd['PORT'] or 5432}/{sd['NAME']}"


def process_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        HEALING_VAR_DIR=str(settings.VAR_DIR),
        DATABASE_URL=database_url(),
        HEALING_GRACE_SECONDS="0",
        HEALING_DEMO="0",
        HEALING_REGISTER_HOME_CACHE="0",
        HEALING_LOG_FORMAT="plain",
        HEALING_SECRET_KEY=settings.SECRET_KEY,
    )
    env.update(extra)
    return env


class Proc:
    def __init__(self, args: list[str], log: Path, env: dict[str, str]) -> None:
        self.log = log
        self.fh = open(log, "wb")
        self.popen = subprocess.Popen(args, cwd=ROOT, env=env, stdout=self.fh, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if text in self.log.read_text(errors="replace"):
                return
            if self.popen.poll() is not None:
                raise RuntimeError(f"process exited early:\n{self.log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"{text!r} not seen in {timeout}s:\n{self.log.read_text(errors='replace')[-3000:]}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.fh.close()


def start_worker(tmp: Path, **env: str) -> Proc:
    proc = Proc([sys.executable, "-m", "celery", "-A", "config", "worker", "--loglevel", "INFO", "--concurrency", "2",
                 "--without-gossip", "--without-mingle", "--purge", "--hostname", f"test-{os.getpid()}@%h"], tmp / "worker.log", process_env(**env))
    proc.wait_for("ready.")
    return proc


def start_beat(tmp: Path, **env: str) -> Proc:
    proc = Proc([sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO", "--schedule", str(tmp / "beat-schedule")],
                tmp / "beat.log", process_env(HEALING_DISPATCH_EVERY_SECONDS="1", **env))
    proc.wait_for("beat: Starting")
    return proc


def wait_until(predicate, timeout: float = 90, what: str = "condition") -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise TimeoutError(f"timed out waiting for {what}")
