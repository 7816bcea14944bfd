"""The public catalogue of check codes and repair actions.

Codes are stable: they appear in the API, the CLI's JSON, reports and the docs page. The texts here
are the single source for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from healing.choices import Kind, Risk, Severity


@dataclass(frozen=True)
class RepairSpec:
    action: str
    title: str
    risk: str
    description: str


@dataclass(frozen=True)
class CheckSpec:
    code: str
    kinds: tuple[str, ...]
    title: str
    severity: str
    meaning: str
    detection: str
    repair: str | None = None  # action name, or None when the check only informs

    @property
    def repair_spec(self) -> RepairSpec | None:
        return REPAIRS.get(self.repair) if self.repair else None


REPAIRS: dict[str, RepairSpec] = {
    spec.action: spec
    for spec in [
        RepairSpec(
            "quarantine_entries",
            "Quarantine entries",
            Risk.MEDIUM,
            "Move the entry files to the quarantine with a manifest (sha256, size, mode, times) and drop "
            "their index records; rollback puts both back byte-for-byte.",
        ),
        RepairSpec(
            "quarantine_files",
            "Quarantine stray files",
            Risk.MEDIUM,
            "Move the stray files to the quarantine with a manifest; rollback puts them back byte-for-byte.",
        ),
        RepairSpec(
            "rewrite_key_field",
            "Rewrite key field",
            Risk.LOW,
            "Rewrite the entry's `key` field to the name aicache looks it up by (the file name), atomically "
            "(temp file, rename). The original bytes are kept for rollback.",
        ),
        RepairSpec(
            "clamp_timestamps",
            "Clamp future timestamps",
            Risk.MEDIUM,
            "Set `timestamp` and `last_accessed` that lie in the future to the time of repair, atomically. "
            "The original bytes are kept for rollback.",
        ),
        RepairSpec(
            "restore_read_permission",
            "Restore owner read/write permission",
            Risk.LOW,
            "chmod u+rw on entries the cache's own user cannot read; rollback restores the old mode.",
        ),
        RepairSpec(
            "tighten_permissions",
            "Remove group/other write permission",
            Risk.LOW,
            "chmod go-w on the store directory and entries; rollback restores the old modes.",
        ),
        RepairSpec(
            "index_resync",
            "Resynchronise index records",
            Risk.LOW,
            "Add, update or remove only the named index records from the entries on disk, merging with "
            "whatever the client wrote meanwhile; write atomically. Rollback restores the records.",
        ),
        RepairSpec(
            "rebuild_index",
            "Rebuild the whole index",
            Risk.HIGH,
            "Write a new index from every valid entry (keeping what the current index still knows), "
            "atomically; the old index is kept in the quarantine for rollback.",
        ),
        RepairSpec(
            "evict_lru",
            "Evict least-recently-used entries to budget",
            Risk.HIGH,
            "Quarantine the least recently accessed entries until the store fits its byte budget; "
            "rollback restores them.",
        ),
    ]
}


_FS = (Kind.AICACHE_FS,)
_ALL = (Kind.AICACHE_FS, Kind.SQLITE, Kind.REDIS)

CHECKS: dict[str, CheckSpec] = {
    spec.code: spec
    for spec in [
        CheckSpec(
            "fs.entry_corrupt", _FS, "Corrupt entry", Severity.HIGH,
            "An entry file is not parseable JSON: truncated by a crash or a full disk, or overwritten with garbage. "
            "aicache deletes such an entry on read, so the answer is lost and paid for again.",
            "Each `<sha256>.json` is parsed; a parse failure on a file older than the grace period is reported.",
            "quarantine_entries",
        ),
        CheckSpec(
            "fs.entry_schema", _FS, "Entry with missing or mistyped fields", Severity.MEDIUM,
            "The entry parses but lacks `key`, `value` or `timestamp`, or holds them with the wrong type; "
            "aicache raises on it and deletes it.",
            "Field presence and types are checked against aicache's CacheEntry.",
            "quarantine_entries",
        ),
        CheckSpec(
            "fs.entry_key_mismatch", _FS, "Key field differs from file name", Severity.LOW,
            "The `key` inside the entry is not the file's name, so tools that trust the field point at the wrong entry.",
            "The `key` field is compared with the file name's sha256.",
            "rewrite_key_field",
        ),
        CheckSpec(
            "fs.entry_unreadable", _FS, "Entry cannot be read", Severity.HIGH,
            "Opening or reading the entry fails (permission or I/O error): the cache silently misses.",
            "The open/read error of each entry is recorded.",
            "restore_read_permission",
        ),
        CheckSpec(
            "fs.index_unreadable", _FS, "Index missing, unparseable or of the wrong shape", Severity.HIGH,
            "`.index.json` is missing while entries exist, does not parse, or is not a mapping; aicache then "
            "resets it to `{}` and loses every record.",
            "The index is read and parsed; a read during a client's rewrite is retried before reporting.",
            "rebuild_index",
        ),
        CheckSpec(
            "fs.index_orphan", _FS, "Entry without index record", Severity.LOW,
            "A valid entry has no record in the index: listings, stats and pruning ignore it.",
            "Entry keys are compared with index keys.",
            "index_resync",
        ),
        CheckSpec(
            "fs.index_dangling", _FS, "Index record without entry", Severity.LOW,
            "The index names an entry whose file is gone: stats overcount and listings show ghosts.",
            "Index keys are compared with entry files.",
            "index_resync",
        ),
        CheckSpec(
            "fs.index_stale", _FS, "Index record disagrees with entry", Severity.LOW,
            "The index record's created_at, access count, last access or response length differs from the entry "
            "(lost index updates from concurrent writers).",
            "Each record's fields are compared with its entry.",
            "index_resync",
        ),
        CheckSpec(
            "fs.entry_expired", _FS, "Expired entry still on disk", Severity.LOW,
            "The entry's TTL has elapsed but the file remains, using space until someone reads it.",
            "`timestamp + ttl_seconds` is compared with the clock.",
            "quarantine_entries",
        ),
        CheckSpec(
            "fs.entry_future", _FS, "Timestamps in the future", Severity.MEDIUM,
            "`timestamp` or `last_accessed` lies ahead of the clock beyond the tolerance: a writer with a wrong "
            "clock; TTLs and LRU order are wrong for these entries.",
            "Timestamps are compared with the clock plus the tolerance.",
            "clamp_timestamps",
        ),
        CheckSpec(
            "fs.stray_file", _FS, "Stray file in the store", Severity.LOW,
            "Temp, swap, backup or editor files, or extensionless legacy entries, left in the store.",
            "File names are matched against temp/swap/editor patterns and the legacy entry pattern.",
            "quarantine_files",
        ),
        CheckSpec(
            "fs.permissions", _FS, "Store writable by group or others", Severity.HIGH,
            "The store directory or entries are writable by group or others: anyone on the machine can plant answers.",
            "The mode bits of the directory and of every entry are checked for g+w or o+w.",
            "tighten_permissions",
        ),
        CheckSpec(
            "fs.size_budget", _FS, "Store over its byte budget", Severity.MEDIUM,
            "The store holds more bytes than the target's budget.",
            "The sum of entry sizes is compared with the budget.",
            "evict_lru",
        ),
        CheckSpec(
            "fs.disk_forecast", _FS, "Disk runs out within the horizon", Severity.HIGH,
            "At the store's measured growth rate, the free space of its file system is used up within the horizon.",
            "A least-squares slope over the recent byte-count samples is projected onto the free space.",
        ),
        CheckSpec(
            "ai.poisoned_response", _ALL, "Error or refusal cached as an answer", Severity.HIGH,
            "A cached response is a provider error, rate-limit text, refusal, or an empty or cut-off answer, served "
            "to every later caller as if it were real.",
            "Responses are matched against error, rate-limit and refusal phrasing, emptiness and cut-off endings.",
            "quarantine_entries",
        ),
        CheckSpec(
            "ai.secret_leak", _ALL, "Secret in cached prompt or response", Severity.CRITICAL,
            "An API key, private key, token or e-mail address sits in a cached prompt preview or response, "
            "readable by anyone who can read the cache.",
            "Known secret formats (provider keys, AWS keys, PEM private keys, JWTs, bearer tokens) and e-mail "
            "addresses are matched; the finding stores only a redacted form.",
            "quarantine_entries",
        ),
        CheckSpec(
            "target.unreachable", _ALL, "Target cannot be checked", Severity.CRITICAL,
            "The store cannot be reached: the path is missing, not a directory, or not permitted.",
            "Connecting or opening the store fails.",
        ),
        CheckSpec(
            "perf.anomaly", _ALL, "Metric departs from its baseline", Severity.MEDIUM,
            "A metric (entries, bytes, growth rate, sampled read latency) departs from its own recent baseline.",
            "A robust z-score (median and MAD of the recent samples) beyond the threshold.",
        ),
    ]
}


def check_spec(code: str) -> CheckSpec:
    return CHECKS[code]
