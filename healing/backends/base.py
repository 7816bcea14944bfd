"""The backend protocol: one small interface, one module per kind of store.

Backends know nothing of Django models: they take a `TargetConfig` and return plain data, so that
they can be tested and benchmarked on their own and run in any worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


class BackendError(Exception):
    """A clear, user-facing reason why the backend could not do what was asked."""


@dataclass(frozen=True)
class TargetConfig:
    id: int
    name: str
    kind: str
    location: str
    byte_budget: int | None = None
    allowed_models: tuple[str, ...] = ()
    grace_seconds: float = 60.0
    future_tolerance_seconds: float = 300.0
    max_entry_bytes: int = 16 * 1024 * 1024
    max_index_bytes: int = 512 * 1024 * 1024
    latency_sample_size: int = 32
    state_path: Path | None = None
    scan_processes: int = 2
    parallel_min_entries: int = 20000
    # per-kind settings from the target's options (key prefixes, thresholds, maintenance window, ...)
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    # on-demand checks may run at full speed; scheduled ones are rate-limited where the store is shared
    full_speed: bool = False

    def opt(self, key: str, default: Any) -> Any:
        value = self.options.get(key, default) if isinstance(self.options, dict) else default
        return default if value is None else value


@dataclass
class Finding:
    """One subject failing one check. `detail` is small and JSON-able; it never holds a secret in clear."""

    code: str
    subject: str
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, **self.detail}


@dataclass
class CheckOutcome:
    reachable: bool
    findings: list[Finding] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    # facts about the store a diagnosis may cite (free disk, mtimes of failing subjects, ...)
    evidence: dict[str, Any] = field(default_factory=dict)
    settling: int = 0
    error: str = ""


@dataclass
class PlanDraft:
    """A dry run: what would change, on which subjects, fingerprinted as they are now."""

    action: str
    risk: str
    operations: list[dict[str, Any]]
    blast_entries: int
    blast_bytes: int
    summary: str
    skipped: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ApplyResult:
    applied: list[dict[str, Any]]
    skipped: list[dict[str, Any]]


class Backend(Protocol):
    kind: str

    def __init__(self, config: TargetConfig) -> None: ...

    def describe(self) -> dict[str, Any]: ...

    def check(self, *, now: float | None = None, incremental: bool = True) -> CheckOutcome: ...

    def recheck(self, subjects: list[str], *, now: float | None = None) -> list[Finding]: ...

    def plan(self, code: str, subjects: list[str], *, now: float | None = None) -> PlanDraft: ...

    def fingerprint(self, subject: str) -> str: ...

    def apply(self, plan: dict[str, Any], workdir: Path) -> ApplyResult: ...

    def rollback(self, workdir: Path) -> dict[str, Any]: ...
