"""Root causes from symptoms. Each rule is a plain function over a `DiagnosisContext`, with its
thresholds in `RULE_PARAMS`, so that each can be tested on its own and tuned as data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

RULE_PARAMS: dict[str, dict[str, float]] = {
    "disk_full_write_burst": {"min_corrupt": 2, "window_seconds": 30, "cluster_share": 0.6, "free_ratio_below": 0.05},
    "writer_crash_mid_write": {"min_corrupt": 2, "window_seconds": 30, "cluster_share": 0.6, "free_ratio_below": 0.05},
    "index_lost_and_reset": {"orphan_share": 0.5, "min_orphans": 5},
    "external_deletion": {"min_dangling": 3},
    "provider_outage_cached": {"min_poisoned": 2, "window_seconds": 3600, "cluster_share": 0.6},
    "repair_regression": {"within_seconds": 3600},
    "systemic_failure": {},  # share and minimum size come from settings (STORM_SHARE, STORM_MIN_ENTRIES)
}

# checks whose subjects are entries that fail outright; their share of the store decides storm mode
ENTRY_FAILURE_CODES = ("fs.entry_corrupt", "fs.entry_schema", "fs.entry_unreadable", "ai.poisoned_response")


@dataclass
class IssueView:
    id: int
    code: str
    count: int
    first_seen: float


@dataclass
class DiagnosisContext:
    issues: dict[str, IssueView]
    evidence: dict[str, Any]
    entries_total: int
    now: float
    recent_repairs: list[dict[str, Any]] = field(default_factory=list)
    storm_share: float = 0.3
    storm_min_entries: int = 20


@dataclass
class DiagnosisResult:
    rule: str
    title: str
    explanation: str
    confidence: float
    evidence: dict[str, Any]
    codes: list[str]
    recommendation: str = ""
    storm: bool = False


def largest_cluster(times: list[float], window: float) -> tuple[int, float, float]:
    """(size, start, end) of the largest set of times that fit in one window."""
    times = sorted(times)
    best = (0, 0.0, 0.0)
    lo = 0
    for hi, t in enumerate(times):
        while t - times[lo] > window:
            lo += 1
        if hi - lo + 1 > best[0]:
            best = (hi - lo + 1, times[lo], t)
    return best


def _corrupt_cluster(ctx: DiagnosisContext, p: dict) -> tuple[int, float, float] | None:
    issue = ctx.issues.get("fs.entry_corrupt")
    mtimes = ctx.evidence.get("corrupt_mtimes") or []
    if not issue or issue.count < p["min_corrupt"] or not mtimes:
        return None
    size, start, end = largest_cluster(mtimes, p["window_seconds"])
    if size < p["min_corrupt"] or size / len(mtimes) < p["cluster_share"]:
        return None
    return size, start, end


def rule_disk_full_write_burst(ctx: DiagnosisContext, p: dict) -> DiagnosisResult | None:
    cluster = _corrupt_cluster(ctx, p)
    free_ratio = (ctx.evidence.get("disk") or {}).get("free_ratio")
    if cluster is None or free_ratio is None or free_ratio >= p["free_ratio_below"]:
        return None
    size, start, end = cluster
    return DiagnosisResult(
        "disk_full_write_burst",
        "Disk filled during a write burst",
        f"{size} corrupt entries were last written within {end - start:.1f} s of each other and the file system "
        f"has only {free_ratio:.1%} free: writes were cut short when the disk ran out of space.",
        0.85,
        {"clustered_corrupt": size, "window_start": start, "window_end": end, "disk_free_ratio": free_ratio},
        ["fs.entry_corrupt"],
        "Free disk space first, then quarantine the corrupt entries.",
    )


def rule_writer_crash_mid_write(ctx: DiagnosisContext, p: dict) -> DiagnosisResult | None:
    cluster = _corrupt_cluster(ctx, p)
    free_ratio = (ctx.evidence.get("disk") or {}).get("free_ratio")
    if cluster is None or (free_ratio is not None and free_ratio < p["free_ratio_below"]):
        return None
    size, start, end = cluster
    return DiagnosisResult(
        "writer_crash_mid_write",
        "Writer crashed mid-write",
        f"{size} corrupt entries were last written within {end - start:.1f} s of each other while the disk had room "
        "(free ratio {0}): aicache writes entries in place without a temp file, so a process killed during a burst "
        "of writes leaves them truncated.".format(f"{free_ratio:.1%}" if free_ratio is not None else "unknown"),
        0.7,
        {"clustered_corrupt": size, "window_start": start, "window_end": end, "disk_free_ratio": free_ratio},
        ["fs.entry_corrupt"],
        "Quarantine the corrupt entries; look for a crashed or killed client at that time.",
    )


def rule_index_lost_and_reset(ctx: DiagnosisContext, p: dict) -> DiagnosisResult | None:
    unreadable = ctx.issues.get("fs.index_unreadable")
    orphans = ctx.issues.get("fs.index_orphan")
    orphan_count = orphans.count if orphans else 0
    records = ctx.evidence.get("index_records", 0)
    share = orphan_count / ctx.entries_total if ctx.entries_total else 0.0
    if unreadable and (orphan_count >= p["min_orphans"] or ctx.entries_total >= p["min_orphans"]):
        confidence, why = 0.9, f"the index is unreadable ({ctx.evidence.get('index_problem')}) while {ctx.entries_total} entries exist"
    elif orphan_count >= p["min_orphans"] and share >= p["orphan_share"]:
        confidence, why = 0.85, f"{orphan_count} of {ctx.entries_total} entries ({share:.0%}) have no index record and the index holds only {records}"
    else:
        return None
    return DiagnosisResult(
        "index_lost_and_reset",
        "Index lost and reset by the client",
        f"{why[0].upper() + why[1:]}. aicache resets an index it cannot parse to an empty one, so every record is "
        "lost while the entries stay on disk.",
        confidence,
        {"orphans": orphan_count, "entries": ctx.entries_total, "index_records": records, "index_problem": ctx.evidence.get("index_problem")},
        [c for c in ("fs.index_unreadable", "fs.index_orphan") if c in ctx.issues],
        "Rebuild the index from the entries (or resync the orphan records).",
    )


def rule_external_deletion(ctx: DiagnosisContext, p: dict) -> DiagnosisResult | None:
    dangling = ctx.issues.get("fs.index_dangling")
    if not dangling or dangling.count < p["min_dangling"] or "fs.entry_corrupt" in ctx.issues:
        return None
    return DiagnosisResult(
        "external_deletion",
        "Entries deleted outside aicache",
        f"{dangling.count} index records point at entry files that are gone, and no entry is corrupt: the files "
        "were removed by something other than aicache (a cleanup job, `rm`, a sync tool), which would have removed "
        "the records too.",
        0.7,
        {"dangling": dangling.count},
        ["fs.index_dangling"],
        "Resync the index; find the job that deletes files in the cache directory.",
    )


def rule_provider_outage_cached(ctx: DiagnosisContext, p: dict) -> DiagnosisResult | None:
    poisoned = ctx.issues.get("ai.poisoned_response")
    times = ctx.evidence.get("poisoned_timestamps") or []
    if not poisoned or poisoned.count < p["min_poisoned"] or not times:
        return None
    size, start, end = largest_cluster(times, p["window_seconds"])
    if size < p["min_poisoned"] or size / len(times) < p["cluster_share"]:
        return None
    return DiagnosisResult(
        "provider_outage_cached",
        "Provider outage cached as answers",
        f"{size} error, rate-limit or refusal responses were cached within {(end - start) / 60:.0f} minutes of each "
        "other: the provider failed for a while and the client cached its errors as if they were answers.",
        0.8,
        {"clustered_poisoned": size, "window_start": start, "window_end": end},
        ["ai.poisoned_response"],
        "Quarantine the poisoned entries so callers get fresh answers; make the client skip caching error responses.",
    )


def rule_repair_regression(ctx: DiagnosisContext, p: dict) -> DiagnosisResult | None:
    recent = [r for r in ctx.recent_repairs if ctx.now - r["at"] <= p["within_seconds"]]
    if not recent:
        return None
    last = max(recent, key=lambda r: r["at"])
    after = [i for i in ctx.issues.values() if i.first_seen >= last["at"] and i.code not in {"target.unreachable"}]
    if not after:
        return None
    codes = sorted({i.code for i in after})
    return DiagnosisResult(
        "repair_regression",
        "A recent repair may have caused this",
        f"Repair #{last['repair_id']} ({last['action']}) succeeded {int(ctx.now - last['at'])} s ago, and since then "
        f"{', '.join(codes)} appeared on this target.",
        0.6,
        {"repair_id": last["repair_id"], "action": last["action"], "repaired_at": last["at"], "new_issues": codes},
        codes,
        f"Review repair #{last['repair_id']} and roll it back if it is the cause.",
    )


def rule_systemic_failure(ctx: DiagnosisContext, p: dict) -> DiagnosisResult | None:
    failing = sum(ctx.issues[c].count for c in ENTRY_FAILURE_CODES if c in ctx.issues)
    if ctx.entries_total < ctx.storm_min_entries or ctx.entries_total == 0:
        return None
    share = failing / ctx.entries_total
    if share <= ctx.storm_share:
        return None
    return DiagnosisResult(
        "systemic_failure",
        "Systemic failure: automation stopped",
        f"{failing} of {ctx.entries_total} entries ({share:.0%}) fail at once, above the {ctx.storm_share:.0%} storm "
        "threshold. Something bigger than single entries is wrong (disk, mount, a broken client release); "
        "automatic repairs on this target are stopped until a person looks.",
        0.9,
        {"failing_entries": failing, "entries": ctx.entries_total, "share": round(share, 4), "threshold": ctx.storm_share},
        [c for c in ENTRY_FAILURE_CODES if c in ctx.issues],
        "Investigate the store and its host; clear storm mode on the target page when done.",
        storm=True,
    )


RULES: dict[str, Callable[[DiagnosisContext, dict], DiagnosisResult | None]] = {
    "disk_full_write_burst": rule_disk_full_write_burst,
    "writer_crash_mid_write": rule_writer_crash_mid_write,
    "index_lost_and_reset": rule_index_lost_and_reset,
    "external_deletion": rule_external_deletion,
    "provider_outage_cached": rule_provider_outage_cached,
    "repair_regression": rule_repair_regression,
    "systemic_failure": rule_systemic_failure,
}


def diagnose(ctx: DiagnosisContext) -> list[DiagnosisResult]:
    return [result for name, rule in RULES.items() if (result := rule(ctx, RULE_PARAMS[name])) is not None]
