"""The record: an append-only, hash-chained table of audit events."""

from __future__ import annotations

from django.db import models

from compliance.actions import Action


class ActorKind(models.TextChoices):
    USER = "user", "User"
    POLICY = "policy", "Policy"
    SYSTEM = "system", "System"


class AuditEvent(models.Model):
    """One state change, written in the same transaction as the change itself.

    `seq` is gapless and assigned under the chain-head lock; `hash` covers the event's canonical
    form and the previous event's hash, so an edit, deletion, insertion or reorder shows.
    """

    seq = models.BigIntegerField(unique=True)
    at = models.DateTimeField(db_index=True)
    actor_kind = models.CharField(max_length=16, choices=ActorKind.choices)
    actor_id = models.CharField(max_length=64, blank=True)
    actor_label = models.CharField(max_length=200, blank=True)
    actor_version = models.IntegerField(null=True, blank=True)
    action = models.CharField(max_length=64, choices=Action.choices, db_index=True)
    object_type = models.CharField(max_length=64)
    object_id = models.CharField(max_length=64)
    scope = models.CharField(max_length=64, blank=True, db_index=True, help_text="e.g. target:3")
    summary = models.CharField(max_length=300, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    source_ip = models.CharField(max_length=64, blank=True)
    forwarded_for = models.CharField(max_length=300, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["-seq"]
        indexes = [
            models.Index(fields=["scope", "-seq"]),
            models.Index(fields=["object_type", "object_id"]),
            models.Index(fields=["actor_kind", "actor_id"]),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} {self.object_type}:{self.object_id}"


class ChainHead(models.Model):
    """A single row holding the chain's head; locking it serialises appends."""

    seq = models.BigIntegerField(default=0)
    hash = models.CharField(max_length=64, default="0" * 64)


class Checkpoint(models.Model):
    """A signed statement of the chain head: (sequence, hash, time), Ed25519. A copy of each lives
    outside the database, so that truncating or rewriting the table cannot hide."""

    seq = models.BigIntegerField(unique=True)
    hash = models.CharField(max_length=64)
    at = models.DateTimeField()
    key_id = models.CharField(max_length=32)
    signature = models.CharField(max_length=128)

    class Meta:
        ordering = ["-seq"]


class ComplianceReport(models.Model):
    """An exported report: its scope, and each file with its digest and detached signature."""

    title = models.CharField(max_length=200)
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    targets = models.JSONField(default=list)
    created_at = models.DateTimeField()
    created_by = models.CharField(max_length=150)
    files = models.JSONField(default=dict, help_text="format -> {path, sha256, signature_path}")
    summary = models.JSONField(default=dict)

    class Meta:
        ordering = ["-created_at"]
