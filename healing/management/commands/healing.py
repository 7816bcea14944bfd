"""Command line for scripts and CI/CD pipelines.

    manage.py healing targets add NAME PATH [--label L] [--interval S] [--budget BYTES]
    manage.py healing targets list [--json]
    manage.py healing check NAME          # JSON; exit 0 healthy, 1 issues found, 2 could not check
    manage.py healing pass NAME           # check, diagnose, plan, execute what policy allows, verify
    manage.py healing repairs [--target NAME] [--json]
    manage.py healing approve ID --user U [--comment C]
    manage.py healing rollback ID --user U
    manage.py healing bootstrap           # first start: admin account, ~/.cache/aicache, demo store
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from compliance.actions import Action
from compliance.actors import Actor
from compliance.context import audit_context
from compliance.services import audit_append, audited_transaction
from healing import services
from healing.choices import RunStatus
from healing.models import CacheTarget, Repair

EXIT_HEALTHY, EXIT_ISSUES, EXIT_FAILED = 0, 1, 2


class Command(BaseCommand):
    help = "Watch and heal AI-response caches from the command line."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="verb", required=True)
        targets = sub.add_parser("targets", help="add or list targets")
        tsub = targets.add_subparsers(dest="targets_verb", required=True)
        add = tsub.add_parser("add", help="register a cache target")
        add.add_argument("name")
        add.add_argument("location", help="aicache directory (~/.cache/aicache), SQLite file, or redis://[:password@]host:6379/0")
        add.add_argument("--kind", default="aicache_fs", choices=["aicache_fs", "sqlite", "redis"])
        add.add_argument("--allowed-model", action="append", default=[], dest="allowed_models", help="ai.stale_model: a model entries may come from")
        add.add_argument("--option", action="append", default=[], dest="extra_options", metavar="KEY=VALUE",
                         help="a per-target option, e.g. prefixes=llmcache:,redis_cache: or maintenance_window=02:00-04:00 (JSON values allowed)")
        add.add_argument("--label", action="append", default=[], dest="labels")
        add.add_argument("--interval", type=int, default=None, help="seconds between checks")
        add.add_argument("--budget", type=int, default=None, help="byte budget (fs.size_budget)")
        add.add_argument("--grace", type=float, default=None, help="grace period in seconds before a finding is acted on")
        lst = tsub.add_parser("list", help="list targets")
        lst.add_argument("--json", action="store_true")
        check = sub.add_parser("check", help="run one target's checks now and print JSON")
        check.add_argument("name")
        heal = sub.add_parser("pass", help="one full synchronous pass: check, diagnose, plan, execute, verify")
        heal.add_argument("name")
        reps = sub.add_parser("repairs", help="list repairs")
        reps.add_argument("--target")
        reps.add_argument("--json", action="store_true")
        approve = sub.add_parser("approve", help="approve a repair")
        approve.add_argument("repair_id", type=int)
        approve.add_argument("--user", required=True)
        approve.add_argument("--comment", default="")
        rollback = sub.add_parser("rollback", help="roll back a succeeded repair")
        rollback.add_argument("repair_id", type=int)
        rollback.add_argument("--user", required=True)
        rollback.add_argument("--reason", default="")
        sub.add_parser("bootstrap", help="first-start set-up: admin account, home cache, demo store")

    def handle(self, *args: Any, **options: Any) -> None:
        verb = options["verb"]
        with audit_context(request_id=f"cli-{secrets.token_hex(6)}", source_ip="cli"):
            try:
                if verb == "targets":
                    return self._targets(options)
                if verb == "check":
                    return self._check(options)
                if verb == "pass":
                    return self._pass(options)
                if verb == "repairs":
                    return self._repairs(options)
                if verb == "approve":
                    repair = services.repair_approve(actor=self._user(options["user"]), repair_id=options["repair_id"], comment=options["comment"])
                    self.stdout.write(f"repair #{repair.pk}: {repair.get_status_display()}")
                    return None
                if verb == "rollback":
                    repair = services.repair_rollback(actor=self._user(options["user"]), repair_id=options["repair_id"], reason=options["reason"])
                    self.stdout.write(f"repair #{repair.pk}: {repair.get_status_display()}")
                    return None
                if verb == "bootstrap":
                    return self._bootstrap()
            except services.HealingError as exc:
                raise CommandError(str(exc)) from exc
            except Repair.DoesNotExist as exc:
                raise CommandError("no such repair") from exc
        return None

    def _user(self, username: str):
        try:
            return get_user_model().objects.get(username=username)
        except get_user_model().DoesNotExist as exc:
            raise CommandError(f"no user named {username!r}") from exc

    def _target(self, name: str) -> CacheTarget:
        try:
            return CacheTarget.objects.get(name=name)
        except CacheTarget.DoesNotExist as exc:
            known = ", ".join(CacheTarget.objects.values_list("name", flat=True)) or "none yet"
            raise CommandError(f"no target named {name!r} (known: {known})") from exc

    def _targets(self, options: dict) -> None:
        if options["targets_verb"] == "add":
            extra = {"grace_seconds": options["grace"]} if options["grace"] is not None else {}
            for item in options["extra_options"]:
                key, sep, value = item.partition("=")
                if not sep or not key.strip():
                    raise CommandError(f"--option {item!r}: write it as KEY=VALUE")
                try:
                    extra[key.strip()] = json.loads(value)
                except ValueError:
                    extra[key.strip()] = [v for v in value.split(",") if v] if key.strip() == "prefixes" else value
            target = services.target_create(
                actor=Actor.system("cli"), name=options["name"], location=options["location"], kind=options["kind"],
                labels=options["labels"], check_interval_seconds=options["interval"], byte_budget=options["budget"], options=extra,
                allowed_models=options["allowed_models"],
            )
            self.stdout.write(f"added target {target.name} ({target.kind}) at {target.location}")
            return
        rows = [
            {"name": t.name, "kind": t.kind, "location": t.location, "labels": t.labels, "enabled": t.enabled,
             "storm_mode": t.storm_mode, "last_check_at": t.last_check_at.isoformat() if t.last_check_at else None}
            for t in CacheTarget.objects.order_by("name")
        ]
        if options["json"]:
            self.stdout.write(json.dumps(rows, indent=2))
            return
        for row in rows:
            self.stdout.write(f"{row['name']:<24} {row['kind']:<11} {row['location']}")

    def _check(self, options: dict) -> None:
        target = self._target(options["name"])
        report = services.check_target(target_id=target.pk, trigger="cli", actor=Actor.system("cli"))
        self.stdout.write(json.dumps(report.as_dict(), indent=2, default=str))
        sys.exit({RunStatus.HEALTHY: EXIT_HEALTHY, RunStatus.ISSUES: EXIT_ISSUES}.get(report.run.status, EXIT_FAILED))

    def _pass(self, options: dict) -> None:
        target = self._target(options["name"])
        report = services.target_pass(target_id=target.pk, trigger="cli", actor=Actor.system("cli"), execute_inline=True)
        self.stdout.write(json.dumps(report.as_dict(), indent=2, default=str))
        if report.state == "busy":
            self.stderr.write(f"{target.name} is busy with another pass or repair; try again shortly")
            sys.exit(EXIT_FAILED)
        status = report.check.run.status if report.check else RunStatus.FAILED
        sys.exit({RunStatus.HEALTHY: EXIT_HEALTHY, RunStatus.ISSUES: EXIT_ISSUES}.get(status, EXIT_FAILED))

    def _repairs(self, options: dict) -> None:
        qs = Repair.objects.select_related("target").order_by("-pk")
        if options["target"]:
            qs = qs.filter(target=self._target(options["target"]))
        rows = [{"id": r.pk, "target": r.target.name, "code": r.code, "action": r.action, "risk": r.risk, "status": r.status,
                 "blast_entries": r.blast_entries, "gate": r.gate_reason} for r in qs[:200]]
        if options["json"]:
            self.stdout.write(json.dumps(rows, indent=2))
            return
        for row in rows:
            self.stdout.write(f"#{row['id']:<5} {row['target']:<20} {row['status']:<18} {row['risk']:<8} {row['action']:<22} {row['code']}")

    def _demo_targets(self, demo_dir: Path) -> None:
        """The demo stores, each registered once: `var/demo-targets` remembers which, so that a demo target an
        admin deleted does not come back at the next start."""
        from healing.demo import DEMO_SQLITE_MODELS, build_demo_sqlite, build_demo_store

        marker = Path(settings.VAR_DIR) / "demo-targets"
        done = set(marker.read_text().split()) if marker.exists() else set()
        done |= set(CacheTarget.objects.filter(is_demo=True).values_list("name", flat=True))
        if "demo-injected-faults" not in done:
            root = build_demo_store(demo_dir)
            services.target_create(actor=Actor.system("bootstrap"), name="demo-injected-faults", location=str(root), labels=["demo"],
                                   description="DEMO aicache file store with injected faults (HEALING_DEMO=0 turns it off)",
                                   check_interval_seconds=60, is_demo=True)
            self.stdout.write(f"registered the demo store at {root}")
            done.add("demo-injected-faults")
        if "demo-sqlite-injected-faults" not in done:
            path = build_demo_sqlite(demo_dir.with_name(demo_dir.name + "-sqlite") / "cache.db")
            services.target_create(actor=Actor.system("bootstrap"), name="demo-sqlite-injected-faults", kind="sqlite", location=str(path),
                                   labels=["demo"], allowed_models=DEMO_SQLITE_MODELS, check_interval_seconds=60, is_demo=True,
                                   description="DEMO aicache cache.db (SQLite) with injected faults (HEALING_DEMO=0 turns it off)")
            self.stdout.write(f"registered the demo SQLite cache at {path}")
            done.add("demo-sqlite-injected-faults")
        marker.write_text("\n".join(sorted(done)) + "\n")

    def _bootstrap(self) -> None:
        conf = settings.HEALING
        User = get_user_model()
        password_file = Path(settings.VAR_DIR) / "initial-admin-password"
        if not User.objects.filter(is_superuser=True).exists():
            password = secrets.token_urlsafe(12)
            with audited_transaction():
                user = User.objects.create_superuser("admin", "", password)
                audit_append(actor=Actor.system("bootstrap"), action=Action.USER_CREATED, object_type="user", object_id=user.pk,
                             summary="first-start admin account created")
            password_file.write_text(password + "\n")
            password_file.chmod(0o600)
        home = Path("~/.cache/aicache").expanduser()
        if conf["REGISTER_HOME_CACHE"] and home.is_dir() and not CacheTarget.objects.filter(location=str(home)).exists():
            services.target_create(actor=Actor.system("bootstrap"), name="home-aicache", location=str(home), labels=["local"],
                                   description="~/.cache/aicache of the user running the product")
            self.stdout.write(f"registered {home}")
        if conf["DEMO"]:
            self._demo_targets(Path(conf["DEMO_DIR"]))
        self.stdout.write("")
        self.stdout.write("=" * 72)
        bind = os.environ.get("HEALING_BIND", "127.0.0.1:8000")
        self.stdout.write(f"aicache-healing is starting: open http://{bind}/ and sign in as")
        if password_file.exists():
            self.stdout.write(f"  user: admin    password: {password_file.read_text().strip()}")
            self.stdout.write(f"  (kept in {password_file}; change it in the admin, then delete the file)")
        else:
            self.stdout.write("  your admin account (create another with: manage.py createsuperuser)")
        self.stdout.write("=" * 72)
