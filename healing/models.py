"""The engine's records. Rules about one object live here; every state change goes through services."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from healing.choices import (
    ApprovalDecision,
    IssueStatus,
    Kind,
    PolicyDecision,
    RepairStatus,
    Risk,
    RunStatus,
    Severity,
)


class CacheTarget(models.Model):
    """One cache store to watch: a directory, a SQLite file or a Redis server."""

    name = models.SlugField(max_length=80, unique=True)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.AICACHE_FS)
    location = models.CharField(max_length=1000, help_text="Directory or file path, or a connection URL (its password is masked)")
    secret = models.TextField(blank=True, editable=False, help_text="The connection password, Fernet-encrypted")
    description = models.CharField(max_length=300, blank=True)
    labels = models.JSONField(default=list, blank=True, help_text='Labels policies match on, e.g. ["prod", "team-a"]')
    enabled = models.BooleanField(default=True)
    is_demo = models.BooleanField(default=False)
    check_interval_seconds = models.PositiveIntegerField(default=300)
    byte_budget = models.BigIntegerField(null=True, blank=True, help_text="fs.size_budget fires above this")
    allowed_models = models.JSONField(default=list, blank=True)
    options = models.JSONField(default=dict, blank=True, help_text="Per-target overrides (grace_seconds, ...)")
    storm_mode = models.BooleanField(default=False, help_text="Automation stopped: a systemic failure was found")
    storm_reason = models.CharField(max_length=300, blank=True)
    breaker_tripped = models.BooleanField(default=False, help_text="Circuit breaker: every repair needs a human until an admin resets it")
    breaker_reason = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_check_at = models.DateTimeField(null=True, blank=True)
    next_check_at = models.DateTimeField(null=True, blank=True, db_index=True)
    # the lease keeps two passes (or a pass and a repair) from overlapping on one target
    lease_owner = models.CharField(max_length=64, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def option(self, key: str, default):
        return self.options.get(key, default) if isinstance(self.options, dict) else default


class CheckRun(models.Model):
    target = models.ForeignKey(CacheTarget, on_delete=models.CASCADE, related_name="runs")
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.RUNNING)
    trigger = models.CharField(max_length=32, default="schedule")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    entries_scanned = models.PositiveIntegerField(default=0)
    files_read = models.PositiveIntegerField(default=0)
    findings = models.PositiveIntegerField(default=0)
    settling = models.PositiveIntegerField(default=0, help_text="Findings withheld: subject changed within the grace period")
    error = models.TextField(blank=True)
    stats = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["target", "-started_at"])]


class MetricSample(models.Model):
    target = models.ForeignKey(CacheTarget, on_delete=models.CASCADE, related_name="metrics")
    run = models.ForeignKey(CheckRun, on_delete=models.SET_NULL, null=True, blank=True)
    name = models.CharField(max_length=64)
    value = models.FloatField()
    at = models.DateTimeField()

    class Meta:
        ordering = ["-at"]
        indexes = [models.Index(fields=["target", "name", "-at"])]


class Issue(models.Model):
    """All subjects of one check on one target, deduplicated across runs by fingerprint."""

    target = models.ForeignKey(CacheTarget, on_delete=models.CASCADE, related_name="issues")
    code = models.CharField(max_length=64)
    fingerprint = models.CharField(max_length=64)
    severity = models.CharField(max_length=16, choices=Severity.choices)
    status = models.CharField(max_length=16, choices=IssueStatus.choices, default=IssueStatus.OPEN)
    title = models.CharField(max_length=200)
    subject_count = models.PositiveIntegerField(default=0)
    sample = models.JSONField(default=list, blank=True)
    artifact = models.CharField(max_length=500, blank=True, help_text="Full subject list (JSON lines), relative to ARTIFACT_DIR")
    subjects_digest = models.CharField(max_length=64, blank=True)
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    first_run = models.ForeignKey(CheckRun, on_delete=models.SET_NULL, null=True, related_name="+")
    last_run = models.ForeignKey(CheckRun, on_delete=models.SET_NULL, null=True, related_name="+")
    acknowledged_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")

    class Meta:
        ordering = ["-last_seen_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["target", "fingerprint"],
                condition=~Q(status="resolved"),
                name="one_live_issue_per_fingerprint",
            )
        ]
        indexes = [
            models.Index(fields=["target", "status"]),
            models.Index(fields=["status", "severity"]),
            models.Index(fields=["status", "-last_seen_at"]),
            models.Index(fields=["resolved_at"]),
            models.Index(fields=["first_seen_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.code} on {self.target_id} ({self.subject_count})"

    @property
    def is_open(self) -> bool:
        return self.status != IssueStatus.RESOLVED


class Diagnosis(models.Model):
    """A named root cause over a target's open issues, with the rule and evidence that produced it."""

    target = models.ForeignKey(CacheTarget, on_delete=models.CASCADE, related_name="diagnoses")
    run = models.ForeignKey(CheckRun, on_delete=models.SET_NULL, null=True, blank=True)
    rule = models.CharField(max_length=64)
    title = models.CharField(max_length=200)
    explanation = models.TextField()
    confidence = models.FloatField()
    evidence = models.JSONField(default=dict)
    recommendation = models.CharField(max_length=300, blank=True)
    issues = models.ManyToManyField(Issue, related_name="diagnoses", blank=True)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["-updated_at"]
        indexes = [models.Index(fields=["target", "active"])]


class RepairPolicy(models.Model):
    """Ordered rules, first match wins: auto-approve, require N approvers, or forbid."""

    name = models.CharField(max_length=100, unique=True)
    order = models.PositiveIntegerField(default=100)
    enabled = models.BooleanField(default=True)
    match_labels = models.JSONField(default=list, blank=True, help_text="Match when the target has any of these labels (empty: any)")
    match_checks = models.JSONField(default=list, blank=True)
    match_actions = models.JSONField(default=list, blank=True)
    match_risks = models.JSONField(default=list, blank=True)
    max_blast_entries = models.BigIntegerField(null=True, blank=True, help_text="Match only when the plan touches at most this many entries")
    max_blast_bytes = models.BigIntegerField(null=True, blank=True)
    decision = models.CharField(max_length=16, choices=PolicyDecision.choices)
    approvers_required = models.PositiveSmallIntegerField(default=1)
    version = models.PositiveIntegerField(default=1)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["order", "id"]
        verbose_name_plural = "repair policies"

    def __str__(self) -> str:
        return f"{self.order}. {self.name} (v{self.version})"


class Repair(models.Model):
    """A plan of operations on named subjects, computed as a dry run, then gated, executed and verified."""

    target = models.ForeignKey(CacheTarget, on_delete=models.CASCADE, related_name="repairs")
    issue = models.ForeignKey(Issue, on_delete=models.SET_NULL, null=True, blank=True, related_name="repairs")
    code = models.CharField(max_length=64)
    action = models.CharField(max_length=64)
    risk = models.CharField(max_length=16, choices=Risk.choices)
    status = models.CharField(max_length=24, choices=RepairStatus.choices)
    plan = models.JSONField(default=dict)
    plan_hash = models.CharField(max_length=64)
    blast_entries = models.BigIntegerField(default=0)
    blast_bytes = models.BigIntegerField(default=0)
    policy = models.ForeignKey(RepairPolicy, on_delete=models.SET_NULL, null=True, blank=True)
    policy_version = models.PositiveIntegerField(null=True, blank=True)
    approvals_required = models.PositiveSmallIntegerField(default=0)
    gate_reason = models.CharField(max_length=300, blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField()
    approved_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    claim_token = models.CharField(max_length=64, blank=True)
    emergency = models.BooleanField(default=False, help_text="Run through the break-glass path")
    workdir = models.CharField(max_length=500, blank=True, help_text="Quarantine directory holding the manifest")
    result = models.JSONField(default=dict, blank=True)
    verification = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [
            ("approve_repair", "Can approve or reject repairs"),
            ("request_repair", "Can request, retry and roll back repairs"),
            ("break_glass", "Can run a repair during a change freeze (emergency change)"),
            ("reset_breaker", "Can reset a target's circuit breaker"),
        ]
        indexes = [
            models.Index(fields=["target", "status"]),
            models.Index(fields=["status", "-created_at"]),
            models.Index(fields=["created_at"]),
        ]

    def __str__(self) -> str:
        return f"repair #{self.pk} {self.action} ({self.status})"


class Approval(models.Model):
    """One decision on one repair, bound to the plan hash it was made on."""

    repair = models.ForeignKey(Repair, on_delete=models.CASCADE, related_name="approvals")
    decision = models.CharField(max_length=16, choices=ApprovalDecision.choices)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    policy = models.ForeignKey(RepairPolicy, on_delete=models.SET_NULL, null=True, blank=True)
    policy_version = models.PositiveIntegerField(null=True, blank=True)
    plan_hash = models.CharField(max_length=64)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField(null=True, blank=True)
    expiry_notified = models.BooleanField(default=False)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(fields=["repair", "user"], condition=Q(user__isnull=False), name="one_decision_per_user"),
        ]


class ChangeFreeze(models.Model):
    """A window in which no repair runs on targets with the label, except through break-glass."""

    label = models.CharField(max_length=80, help_text="Targets with this label are frozen; '*' freezes every target")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    reason = models.CharField(max_length=300)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")

    class Meta:
        ordering = ["-starts_at"]
        indexes = [models.Index(fields=["label", "ends_at"])]

    def __str__(self) -> str:
        return f"freeze {self.label} {self.starts_at:%Y-%m-%d %H:%M} – {self.ends_at:%Y-%m-%d %H:%M}"


class RetroactiveReview(models.Model):
    """Opened by every break-glass repair; someone other than the one who broke the glass signs it off."""

    repair = models.OneToOneField(Repair, on_delete=models.CASCADE, related_name="review")
    justification = models.TextField()
    opened_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    opened_at = models.DateTimeField()
    due_at = models.DateTimeField(db_index=True)
    signed_off_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    signed_off_at = models.DateTimeField(null=True, blank=True)
    comment = models.TextField(blank=True)

    class Meta:
        ordering = ["due_at"]

    @property
    def is_open(self) -> bool:
        return self.signed_off_at is None


class NotificationRoute(models.Model):
    """Where notifications for targets with a label go: e-mail addresses and/or a JSON webhook."""

    label = models.CharField(max_length=80, default="*", help_text="'*' for every target")
    events = models.JSONField(default=list, blank=True, help_text="Empty: every event")
    emails = models.JSONField(default=list, blank=True)
    webhook_url = models.URLField(blank=True)
    enabled = models.BooleanField(default=True)

    def __str__(self) -> str:
        return f"notify {self.label}: {', '.join(self.emails) or ''} {self.webhook_url}".strip()


class Notification(models.Model):
    """The outbox: a saved row is delivered by a task after commit; a failing channel never blocks the loop."""

    route = models.ForeignKey(NotificationRoute, on_delete=models.CASCADE)
    event = models.CharField(max_length=32)
    target = models.ForeignKey(CacheTarget, on_delete=models.CASCADE, null=True)
    text = models.TextField()
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField()
    delivered_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-created_at"]
