"""Every state change of the engine. Keyword-only, transactional, audited through `compliance`.

The loop, one pass per target:

    check (backend) -> issues -> diagnosis -> plan (dry run) -> policy gate -> execute -> verify -> close or roll back

One module per stage: `targets`, `checking`, `repairs` (with the approval workflow) and `loop`.
"""

from healing.access import AccessDenied
from healing.services.base import (
    HealingError,
    lease_heartbeat,
    scope_of,
    target_config,
    target_lease_acquire,
    target_lease_release,
)
from healing.services.checking import CheckReport, check_target, issue_acknowledge, issue_resolve, issue_subjects
from healing.services.loop import PassReport, target_pass
from healing.services.repairs import (
    ExecuteOutcome,
    approvals_sweep,
    interrupted_repairs,
    policy_match,
    repair_approve,
    repair_break_glass,
    repair_execute,
    repair_plan,
    repair_recover,
    repair_reject,
    repair_request,
    repair_retry,
    repair_rollback,
    review_sign_off,
)
from healing.services.targets import (
    change_freeze_create,
    target_clear_storm,
    target_create,
    target_enter_storm,
    target_reset_breaker,
    target_update,
)

__all__ = [
    "AccessDenied", "CheckReport", "ExecuteOutcome", "HealingError", "PassReport", "approvals_sweep", "change_freeze_create", "check_target",
    "interrupted_repairs", "issue_acknowledge", "issue_resolve", "issue_subjects", "lease_heartbeat", "policy_match", "repair_approve",
    "repair_break_glass", "repair_execute", "repair_plan", "repair_recover", "repair_reject", "repair_request", "repair_retry", "repair_rollback",
    "review_sign_off", "scope_of", "target_clear_storm", "target_config", "target_create", "target_enter_storm", "target_lease_acquire",
    "target_lease_release", "target_pass", "target_reset_breaker", "target_update",
]
