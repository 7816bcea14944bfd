"""Every status vocabulary of the engine, with its badge colour, in one place."""

from django.db import models


class Kind(models.TextChoices):
    AICACHE_FS = "aicache_fs", "aicache file store"
    SQLITE = "sqlite", "SQLite LLM cache"
    REDIS = "redis", "Redis"


class Severity(models.TextChoices):
    CRITICAL = "critical", "Critical"
    HIGH = "high", "High"
    MEDIUM = "medium", "Medium"
    LOW = "low", "Low"
    INFO = "info", "Info"


SEVERITY_RANK = {Severity.CRITICAL: 4, Severity.HIGH: 3, Severity.MEDIUM: 2, Severity.LOW: 1, Severity.INFO: 0}


class Risk(models.TextChoices):
    LOW = "low", "Low"
    MEDIUM = "medium", "Medium"
    HIGH = "high", "High"
    CRITICAL = "critical", "Critical"


RISK_RANK = {Risk.LOW: 0, Risk.MEDIUM: 1, Risk.HIGH: 2, Risk.CRITICAL: 3}


class RunStatus(models.TextChoices):
    RUNNING = "running", "Running"
    HEALTHY = "healthy", "Healthy"
    ISSUES = "issues", "Issues found"
    FAILED = "failed", "Could not check"


class IssueStatus(models.TextChoices):
    OPEN = "open", "Open"
    ACKNOWLEDGED = "acknowledged", "Acknowledged"
    RESOLVED = "resolved", "Resolved"


# "not resolved", spelt so that an index on status serves it
LIVE_ISSUE_STATUSES = ("open", "acknowledged")


class RepairStatus(models.TextChoices):
    AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
    APPROVED = "approved", "Approved"
    FORBIDDEN = "forbidden", "Forbidden by policy"
    REJECTED = "rejected", "Rejected"
    SUPERSEDED = "superseded", "Superseded"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    ROLLED_BACK = "rolled_back", "Rolled back"
    EXPIRED = "expired", "Expired"


OPEN_REPAIR_STATUSES = (RepairStatus.AWAITING_APPROVAL, RepairStatus.APPROVED, RepairStatus.RUNNING)


class PolicyDecision(models.TextChoices):
    AUTO = "auto", "Auto-approve"
    APPROVERS = "approvers", "Require approvers"
    FORBID = "forbid", "Forbid"


class ApprovalDecision(models.TextChoices):
    APPROVE = "approve", "Approve"
    REJECT = "reject", "Reject"


BADGE = {
    # severities
    "critical": "danger",
    "high": "danger",
    "medium": "warning",
    "low": "info",
    "info": "muted",
    # run / issue / repair statuses
    "running": "info",
    "healthy": "ok",
    "issues": "warning",
    "failed": "danger",
    "open": "warning",
    "acknowledged": "info",
    "resolved": "ok",
    "awaiting_approval": "warning",
    "approved": "info",
    "forbidden": "danger",
    "rejected": "muted",
    "superseded": "muted",
    "succeeded": "ok",
    "rolled_back": "warning",
    "expired": "muted",
}


class Role(models.TextChoices):
    """Django groups created by a migration; permissions decide, the names only group them."""

    VIEWER = "viewer", "Viewer"
    OPERATOR = "operator", "Operator"
    APPROVER = "approver", "Approver"
    ADMIN = "admin", "Admin"


class NotificationEvent(models.TextChoices):
    AWAITING_APPROVAL = "awaiting_approval", "A repair awaits approval"
    APPROVAL_EXPIRING = "approval_expiring", "An approval is about to expire"
    REPAIR_FAILED = "repair_failed", "A repair failed or was rolled back"
    BREAKER_TRIPPED = "breaker_tripped", "The circuit breaker tripped"
    CRITICAL_ISSUE = "critical_issue", "A new critical issue"
