"""One turn of the loop on one target: check, plan, gate, and (inline, for the CLI) execute."""


from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from healing.choices import (
    RepairStatus,
    RunStatus,
)
from healing.models import (
    CacheTarget,
    Repair,
)
from healing.services.base import target_lease_acquire, target_lease_release
from healing.services.checking import CheckReport, check_target
from healing.services.repairs import _plan_for_issues, repair_execute

log = logging.getLogger(__name__)


@dataclass
class PassReport:
    target: str
    state: str  # done | busy | failed
    check: CheckReport | None = None
    planned: list[Repair] = field(default_factory=list)
    executed: list[Repair] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        def repair_row(r: Repair) -> dict[str, Any]:
            return {"id": r.pk, "code": r.code, "action": r.action, "risk": r.risk, "status": r.status,
                    "blast_entries": r.blast_entries, "gate": r.gate_reason, "verification": r.verification or None, "error": r.error or None}

        return {
            "target": self.target,
            "state": self.state,
            "check": self.check.as_dict() if self.check else None,
            "planned": [repair_row(r) for r in self.planned],
            "executed": [repair_row(r) for r in self.executed],
        }


def target_pass(*, target_id: int, trigger: str = "schedule", actor: Any = None, execute_inline: bool = False) -> PassReport:
    """One turn of the loop on one target. `execute_inline` runs approved repairs here instead of in Celery."""
    target = CacheTarget.objects.get(pk=target_id)
    owner = f"pass:{uuid.uuid4().hex}"
    if not target_lease_acquire(target_id=target.pk, owner=owner):
        return PassReport(target.name, "busy")
    try:
        report = check_target(target_id=target.pk, trigger=trigger, actor=actor)
        target.refresh_from_db()
        planned = _plan_for_issues(target, report, enqueue=not execute_inline) if report.outcome.reachable and report.run.status != RunStatus.FAILED else []
    finally:
        target_lease_release(target_id=target.pk, owner=owner)
    result = PassReport(target.name, "failed" if report.run.status == RunStatus.FAILED else "done", report, planned)
    if execute_inline:
        for repair in Repair.objects.filter(target=target, status=RepairStatus.APPROVED).order_by("pk"):
            outcome = repair_execute(repair_id=repair.pk, run_check_after=False)
            if outcome.repair is not None:
                outcome.repair.refresh_from_db()
                result.executed.append(outcome.repair)
        if result.executed:
            result.check = check_target(target_id=target.pk, trigger="after_repair", actor=actor)
    return result
