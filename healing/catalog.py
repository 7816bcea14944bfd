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
    # where one code spans kinds, the action that does the same job on each kind
    repair_by_kind: tuple[tuple[str, str], ...] = ()

    @property
    def repair_spec(self) -> RepairSpec | None:
        return REPAIRS.get(self.repair) if self.repair else None

    def repair_for(self, kind: str) -> str | None:
        return dict(self.repair_by_kind).get(kind, self.repair)

    def repair_spec_for(self, kind: str) -> RepairSpec | None:
        action = self.repair_for(kind)
        return REPAIRS[action] if action else None

    @property
    def repairs_by_kind(self) -> list[tuple[str, RepairSpec]]:
        """(kind, repair) for every kind this check covers that has a repair."""
        return [(kind, REPAIRS[a]) for kind in self.kinds if (a := self.repair_for(kind))]

    @property
    def repair_groups(self) -> list[tuple[RepairSpec, list[str]]]:
        """Each distinct repair with the kinds it serves, for the catalogue page."""
        groups: dict[str, tuple[RepairSpec, list[str]]] = {}
        for kind, spec in self.repairs_by_kind:
            groups.setdefault(spec.action, (spec, []))[1].append(kind)
        return list(groups.values())


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
        RepairSpec(
            "quarantine_rows",
            "Quarantine rows",
            Risk.MEDIUM,
            "Copy the rows (every column, with their rowid) into a quarantine database with a manifest of their "
            "sha256, then delete them in short batches, each only if the row is unchanged; rollback inserts them "
            "back under the same rowid.",
        ),
        RepairSpec(
            "reindex",
            "Rebuild SQLite indexes (REINDEX)",
            Risk.LOW,
            "REINDEX rebuilds the damaged index from its table: derived data only. A consistent copy of the "
            "database is taken first; rollback puts it back if nothing was written since.",
        ),
        RepairSpec(
            "wal_checkpoint",
            "Checkpoint and truncate the WAL",
            Risk.LOW,
            "PRAGMA wal_checkpoint(TRUNCATE) copies committed pages into the database and truncates the WAL; "
            "no row changes. Rollback has nothing to restore.",
        ),
        RepairSpec(
            "vacuum",
            "VACUUM the database",
            Risk.HIGH,
            "VACUUM rewrites the whole file without its free pages. It locks the database for its duration, so "
            "it runs only inside the target's maintenance window (option maintenance_window, UTC); a consistent "
            "copy is taken first and rollback puts it back if nothing was written since.",
        ),
        RepairSpec(
            "set_wal_mode",
            "Switch the journal mode to WAL",
            Risk.HIGH,
            "PRAGMA journal_mode=WAL lets readers and the writer work at once; rollback sets the old mode back.",
        ),
        RepairSpec(
            "recover_database",
            "Recover a damaged database into a new file",
            Risk.HIGH,
            "Copy every readable row into a new file with the same schema, check it, then swap it in; the "
            "damaged file (and its WAL) is kept in the quarantine and rollback puts it back byte-for-byte.",
        ),
        RepairSpec(
            "set_ttl",
            "Set TTLs with jitter",
            Risk.MEDIUM,
            "EXPIRE ... NX on keys that have no TTL, with a random jitter so that they do not all expire at "
            "once; rollback PERSISTs the keys whose TTL is still ours.",
        ),
        RepairSpec(
            "quarantine_keys",
            "Quarantine keys",
            Risk.MEDIUM,
            "DUMP each key with its TTL into the quarantine (sha256 in the manifest), then UNLINK it only if it "
            "is unchanged (WATCH/MULTI); rollback RESTOREs the exact payload and remaining TTL.",
        ),
        RepairSpec(
            "memory_purge",
            "Release allocator memory (MEMORY PURGE)",
            Risk.LOW,
            "MEMORY PURGE asks the allocator to return dirty pages to the operating system; no data changes.",
        ),
        RepairSpec(
            "set_eviction_policy",
            "Change maxmemory-policy",
            Risk.HIGH,
            "CONFIG SET maxmemory-policy to an LRU/LFU policy so that a full cache evicts instead of failing "
            "writes; rollback sets the old policy back.",
        ),
    ]
}


_FS = (Kind.AICACHE_FS,)
_SQL = (Kind.SQLITE,)
_REDIS = (Kind.REDIS,)
_ALL = (Kind.AICACHE_FS, Kind.SQLITE, Kind.REDIS)
# entry-level AI findings move the entry aside, whatever holds it
_QUARANTINE_BY_KIND = ((Kind.SQLITE, "quarantine_rows"), (Kind.REDIS, "quarantine_keys"))

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
            "sqlite.integrity", _SQL, "Database file damaged", Severity.CRITICAL,
            "SQLite reports damaged pages or b-trees: rows on them cannot be read, and writes may spread the damage.",
            "PRAGMA quick_check on every run and the full integrity_check on its schedule (default daily); an open "
            "that fails with 'malformed' or 'not a database' counts too.",
            "recover_database",
        ),
        CheckSpec(
            "sqlite.index_corrupt", _SQL, "Index disagrees with its table", Severity.HIGH,
            "An index has missing or extra entries: lookups by key miss rows that exist, so the cache misses and "
            "may store duplicates.",
            "integrity_check messages about an index ('missing from index', 'wrong # of entries in index').",
            "reindex",
        ),
        CheckSpec(
            "sqlite.row_undecodable", _SQL, "Row cannot be decoded", Severity.HIGH,
            "A cached value does not decode the way its client reads it (aicache: zlib then msgpack; LangChain: "
            "serialized generations; GPTCache: answer text), so every lookup fails or returns garbage.",
            "Every row's value is decoded as its client would.",
            "quarantine_rows",
        ),
        CheckSpec(
            "sqlite.orphan_rows", _SQL, "Rows that belong to nothing", Severity.LOW,
            "Rows that refer to a row that does not exist (GPTCache answers, dependencies or sessions of a "
            "missing question): dead weight no lookup reaches.",
            "Foreign references are joined against their parent table.",
            "quarantine_rows",
        ),
        CheckSpec(
            "sqlite.freelist_bloat", _SQL, "Many free pages in the file", Severity.LOW,
            "A large share of the file is free pages left by deletes: disk is wasted and scans are slower.",
            "PRAGMA freelist_count against page_count, above a share and a minimum size.",
            "vacuum",
        ),
        CheckSpec(
            "sqlite.wal_bloat", _SQL, "Write-ahead log has grown large", Severity.MEDIUM,
            "The -wal file is large: checkpoints are starved (a long reader or no checkpointing), reads slow down "
            "and the disk fills.",
            "The -wal file's size against a limit and against the database size.",
            "wal_checkpoint",
        ),
        CheckSpec(
            "sqlite.journal_mode", _SQL, "Rollback journal: readers block the writer", Severity.LOW,
            "The database uses a rollback journal: a reader (a dashboard, a check) blocks the application's "
            "writes, and a crash mid-write is likelier to damage the file.",
            "PRAGMA journal_mode is not 'wal'.",
            "set_wal_mode",
        ),
        CheckSpec(
            "redis.memory_pressure", _REDIS, "Redis close to maxmemory", Severity.HIGH,
            "used_memory is close to maxmemory: the server evicts or, with noeviction, refuses writes.",
            "INFO memory: used_memory against maxmemory (share configurable).",
        ),
        CheckSpec(
            "redis.eviction_policy", _REDIS, "Eviction policy unfit for a cache", Severity.MEDIUM,
            "maxmemory is set with 'noeviction' (writes fail when full), or a volatile-* policy while most cache "
            "keys have no TTL (nothing can be evicted).",
            "CONFIG GET maxmemory-policy with the share of sampled keys that have a TTL.",
            "set_eviction_policy",
        ),
        CheckSpec(
            "redis.evictions", _REDIS, "Keys are being evicted", Severity.MEDIUM,
            "The server evicted keys since the last check: cached answers are lost and paid for again.",
            "The growth of INFO stats evicted_keys between two checks.",
        ),
        CheckSpec(
            "redis.hit_ratio", _REDIS, "Low cache hit ratio", Severity.MEDIUM,
            "Few lookups find their key: the cache costs memory without saving tokens (keys too unstable, TTLs "
            "too short, or evictions).",
            "keyspace_hits / (hits + misses) since the last check, with a minimum number of lookups.",
        ),
        CheckSpec(
            "redis.fragmentation", _REDIS, "Memory fragmentation", Severity.MEDIUM,
            "The server holds much more memory than its data needs (mem_fragmentation_ratio high and many bytes "
            "wasted).",
            "INFO memory: fragmentation ratio and rss minus used memory above their limits.",
            "memory_purge",
        ),
        CheckSpec(
            "redis.keys_without_ttl", _REDIS, "Cache keys without a TTL", Severity.LOW,
            "Cache keys that never expire: the cache only grows, and stale answers are served forever.",
            "TTL of every scanned key under the cache prefixes.",
            "set_ttl",
        ),
        CheckSpec(
            "redis.big_keys", _REDIS, "Oversized cache keys", Severity.MEDIUM,
            "A single key holds more than the size limit: reads of it block the server and eat bandwidth.",
            "Value size of every scanned key (hash field lengths, STRLEN, or MEMORY USAGE for other types).",
            "quarantine_keys",
        ),
        CheckSpec(
            "redis.persistence", _REDIS, "Persistence failing", Severity.HIGH,
            "The last RDB save or AOF write failed: with stop-writes-on-bgsave-error the server refuses writes, "
            "and a restart loses the cache.",
            "INFO persistence: rdb_last_bgsave_status and aof_last_write_status.",
        ),
        CheckSpec(
            "redis.latency", _REDIS, "Slow server", Severity.MEDIUM,
            "Commands are slow: timed PINGs above the limit, or new SLOWLOG / LATENCY events since the last check.",
            "Timed PINGs (p95), SLOWLOG entries newer than the last seen, LATENCY LATEST.",
        ),
        CheckSpec(
            "redis.entry_undecodable", _REDIS, "Cache entry cannot be decoded", Severity.HIGH,
            "A cache key is not what its client reads: a LangChain field that is not a serialized generation, a "
            "RedisVL entry without prompt or response, or a key of the wrong type.",
            "Each scanned key is decoded as LangChain's RedisCache or RedisVL would read it.",
            "quarantine_keys",
        ),
        CheckSpec(
            "ai.stale_model", (Kind.SQLITE, Kind.REDIS), "Answer from a model not allowed", Severity.MEDIUM,
            "An entry was produced by a model that is not in the target's allowed list (retired, or not approved), "
            "and is still served.",
            "The model recorded with the entry (LangChain's llm string, aicache's context, RedisVL metadata) is "
            "compared with the target's allowed models.",
            "quarantine_entries", _QUARANTINE_BY_KIND,
        ),
        CheckSpec(
            "ai.duplicate_entries", (Kind.SQLITE, Kind.REDIS), "Same prompt cached under several keys", Severity.LOW,
            "One prompt is cached several times under unstable keys (a timestamp or a random id in the key), "
            "wasting space and splitting hits.",
            "Prompts are normalised (case, whitespace) and hashed; more than one live entry per hash is reported.",
            "quarantine_entries", _QUARANTINE_BY_KIND,
        ),
        CheckSpec(
            "ai.poisoned_response", _ALL, "Error or refusal cached as an answer", Severity.HIGH,
            "A cached response is a provider error, rate-limit text, refusal, or an empty or cut-off answer, served "
            "to every later caller as if it were real.",
            "Responses are matched against error, rate-limit and refusal phrasing, emptiness and cut-off endings.",
            "quarantine_entries", _QUARANTINE_BY_KIND,
        ),
        CheckSpec(
            "ai.secret_leak", _ALL, "Secret in cached prompt or response", Severity.CRITICAL,
            "An API key, private key, token or e-mail address sits in a cached prompt preview or response, "
            "readable by anyone who can read the cache.",
            "Known secret formats (provider keys, AWS keys, PEM private keys, JWTs, bearer tokens) and e-mail "
            "addresses are matched; the finding stores only a redacted form.",
            "quarantine_entries", _QUARANTINE_BY_KIND,
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
