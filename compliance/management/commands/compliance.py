"""The record from the command line.

    manage.py compliance verify [--public-key PEM] [--json]    # exit 0 intact, 1 broken, 2 could not verify
    manage.py compliance checkpoint                            # sign the chain head now
    manage.py compliance report --start ISO --end ISO [--target NAME ...] [--user NAME]
    manage.py compliance public-key                            # print the public key (give it to auditors)
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from compliance import services
from compliance.keys import public_pem


def _when(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise CommandError(f"not an ISO date or time: {text!r}") from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class Command(BaseCommand):
    help = "Verify the audit chain, sign checkpoints and export compliance reports."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="verb", required=True)
        verify = sub.add_parser("verify")
        verify.add_argument("--public-key", help="PEM file of the public key to check signatures with")
        verify.add_argument("--json", action="store_true")
        sub.add_parser("checkpoint")
        sub.add_parser("public-key")
        report = sub.add_parser("report")
        report.add_argument("--start", required=True)
        report.add_argument("--end", required=True)
        report.add_argument("--target", action="append", default=[])
        report.add_argument("--user", default="cli")

    def handle(self, *args: Any, **options: Any) -> None:
        verb = options["verb"]
        if verb == "verify":
            try:
                pem = open(options["public_key"]).read() if options["public_key"] else None
                result = services.chain_verify(public_key_pem=pem)
            except (OSError, ValueError) as exc:
                self.stderr.write(f"could not verify: {exc}")
                sys.exit(2)
            self.stdout.write(json.dumps(result.as_dict(), indent=2) if options["json"] else result.summary())
            sys.exit(0 if result.ok else 1)
        if verb == "checkpoint":
            checkpoint = services.checkpoint_take()
            self.stdout.write(f"checkpoint at #{checkpoint.seq}" if checkpoint else "nothing new to sign")
            return
        if verb == "public-key":
            self.stdout.write(public_pem())
            return
        if verb == "report":
            from compliance.reports import report_generate

            report = report_generate(start=_when(options["start"]), end=_when(options["end"]), targets=options["target"], actor_label=options["user"])
            for fmt, info in report.files.items():
                self.stdout.write(f"{fmt}: {info['path']}  sha256 {info['sha256']}  signature {info['signature_path']}")
