"""The aicache file store: `<sha256>.json` entries beside a `.index.json`.

aicache (CoreCache) writes entries with `json.dump(..., indent=2)` on set and compactly on every
read (it bumps `access_count`), and rewrites the whole index after each change: in place, with no
temp file, no rename and no lock. An unparseable index is silently reset to `{}`. So a reader can
catch any file half-written, and two clients lose each other's index updates.

The scan is one pass over the directory. A per-target state file remembers each entry's stat
signature and what was learnt from its bytes, so a rescan reads only files that changed and only
stats the rest. Findings on a subject that changed within the grace period are held back ("settling"):
a file being written right now is not corrupt.
"""

from __future__ import annotations

import json
import marshal
import os
import random
import re
import shutil
import stat
import time
from pathlib import Path
from typing import Any

import orjson

from config.forking import PartFailed, run_parts
from healing.backends.base import (
    ApplyResult,
    BackendError,
    CheckOutcome,
    Finding,
    PlanDraft,
    TargetConfig,
)
from healing.backends.fsutil import (
    atomic_write,
    copy_exact,
    create_exclusive,
    file_fingerprint,
    read_bytes,
    sha256_bytes,
    sha256_file,
    swap_in,
    take_out,
)
from healing.catalog import REPAIRS, check_spec
from healing.content import find_secrets, may_hold_secrets_bytes, poison_reason

INDEX_NAME = ".index.json"
ENTRY_RE = re.compile(r"^[0-9a-f]{64}\.json$")
STRAY_RE = re.compile(
    r"(\.(tmp|temp|swp|swo|swn|bak|orig|rej|part)$|~$|^\.#|^#.*#$|^[0-9a-f]{64}$|^\.DS_Store$|\.json\.[A-Za-z0-9_-]+$)"
)
STORE = "."
PROBLEM_CODES = {"corrupt": "fs.entry_corrupt", "schema": "fs.entry_schema", "unreadable": "fs.entry_unreadable"}
STATE_VERSION = 4
ENTRY_FIELDS = {"key": str, "value": str, "timestamp": (int, float)}
OPTIONAL_FIELDS = {"ttl_seconds": (int, type(None)), "access_count": (int,), "last_accessed": (int, float, type(None))}

# Entry summary kept in the state file, one tuple per entry (marshal-friendly, compact):
# (mtime_ns, size, ino, ctime_ns, mode, problem, key, timestamp, ttl, access_count, last_accessed,
#  value_len, poison, secrets)
S_MTIME, S_SIZE, S_INO, S_CTIME, S_MODE, S_PROBLEM, S_KEY, S_TS, S_TTL, S_ACC, S_LAST, S_VLEN, S_POISON, S_SECRETS = range(14)


def _is_num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def analyze_entry_bytes(name: str, data: bytes) -> tuple:
    """Everything a check needs from one entry's bytes, as the tail of a summary tuple."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        stripped = data.lstrip()
        if not stripped:
            reason = "empty file"
        elif stripped[:1] == b"{":
            reason = "truncated JSON"
        else:
            reason = "not JSON"
        return ("corrupt:" + reason, None, None, None, None, None, None, None, ())
    if not isinstance(obj, dict):
        return (f"schema:top level is {type(obj).__name__}, not an object", None, None, None, None, None, None, None, ())
    problems = []
    for field, types in ENTRY_FIELDS.items():
        if field not in obj:
            problems.append(f"missing {field}")
        elif not isinstance(obj[field], types) or isinstance(obj[field], bool):
            problems.append(f"{field} is {type(obj[field]).__name__}")
    for field, types in OPTIONAL_FIELDS.items():
        if field in obj and (not isinstance(obj[field], types) or isinstance(obj[field], bool)):
            problems.append(f"{field} is {type(obj[field]).__name__}")
    if problems:
        return ("schema:" + ", ".join(problems), None, None, None, None, None, None, None, ())
    value = obj["value"]
    secrets = tuple(find_secrets(value))
    key = obj["key"]
    return (
        None,
        None if key == name[:-5] else key,  # None: the key is the file name (keeps the state file small)
        float(obj["timestamp"]),
        obj.get("ttl_seconds"),
        obj.get("access_count", 0),
        obj.get("last_accessed"),
        len(value),
        poison_reason(value),
        secrets,
    )


def index_record_for(entry: dict[str, Any], preview: str) -> dict[str, Any]:
    """The record aicache itself would write for this entry."""
    return {
        "created_at": entry["timestamp"],
        "last_accessed": entry.get("last_accessed"),
        "access_count": entry.get("access_count", 0),
        "prompt_preview": preview,
        "response_length": len(entry["value"]),
    }


def _same_number(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    if not (_is_num(a) and _is_num(b)):
        return False
    return abs(float(a) - float(b)) <= 1e-6


def record_disagreement(record: Any, summary: tuple) -> list[str]:
    """Fields in which an index record disagrees with its entry (empty when in sync)."""
    if not isinstance(record, dict):
        return ["record is not an object"]
    diffs = []
    if not _same_number(record.get("created_at"), summary[S_TS]):
        diffs.append("created_at")
    if record.get("response_length") != summary[S_VLEN]:
        diffs.append("response_length")
    if record.get("access_count") != summary[S_ACC]:
        diffs.append("access_count")
    if not _same_number(record.get("last_accessed"), summary[S_LAST]):
        diffs.append("last_accessed")
    return diffs


class AicacheFsBackend:
    kind = "aicache_fs"

    def __init__(self, config: TargetConfig) -> None:
        self.config = config
        self.root = Path(config.location).expanduser()
        self.index_may_hold_secrets = True

    # ------------------------------------------------------------------ describe
    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"kind": self.kind, "path": str(self.root)}
        try:
            st = os.stat(self.root)
            info["exists"] = True
            info["mode"] = f"{stat.S_IMODE(st.st_mode):o}"
            usage = shutil.disk_usage(self.root)
            info["disk_free_bytes"] = usage.free
            info["disk_total_bytes"] = usage.total
        except OSError as exc:
            info["exists"] = False
            info["error"] = exc.strerror
        return info

    def _unreachable(self) -> str | None:
        try:
            st = os.stat(self.root)
        except FileNotFoundError:
            return f"path {self.root} does not exist"
        except PermissionError:
            return f"permission denied on {self.root}"
        except OSError as exc:
            return f"cannot stat {self.root}: {exc.strerror}"
        if not stat.S_ISDIR(st.st_mode):
            return f"{self.root} is not a directory"
        if not os.access(self.root, os.R_OK | os.X_OK):
            return f"permission denied: cannot list {self.root}"
        return None

    # ------------------------------------------------------------------ state
    def _state_path(self, part: int, parts: int) -> Path | None:
        path = self.config.state_path
        return path.with_name(f"{path.name}.{part}of{parts}") if path else None

    def _load_state(self, path: Path | None) -> dict[str, Any]:
        if not path:
            return {}
        try:
            state = marshal.loads(path.read_bytes())
        except (OSError, EOFError, ValueError, TypeError):
            return {}
        if not isinstance(state, dict) or state.get("v") != STATE_VERSION or state.get("root") != str(self.root):
            return {}
        return state

    def _save_state(self, path: Path | None, state: dict[str, Any]) -> None:
        if not path:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(marshal.dumps(state))
        os.replace(tmp, path)

    # ------------------------------------------------------------------ reading
    def _read_entry(self, dir_fd: int, name: str, st: os.stat_result) -> tuple:
        """(problem, key, ...) for one entry file; I/O errors become `unreadable:` problems."""
        if st.st_size > self.config.max_entry_bytes:
            return (f"corrupt:{st.st_size} bytes, over the {self.config.max_entry_bytes}-byte entry limit",) + (None,) * 7 + ((),)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
        except OSError as exc:
            return (f"unreadable:{exc.strerror or exc}",) + (None,) * 7 + ((),)
        try:
            chunks = [os.read(fd, st.st_size + 1)]
            while len(chunks[-1]) and sum(map(len, chunks)) <= self.config.max_entry_bytes:
                more = os.read(fd, 1 << 20)
                if not more:
                    break
                chunks.append(more)
            data = b"".join(chunks) if len(chunks) > 1 else chunks[0]
        except OSError as exc:
            return (f"unreadable:{exc.strerror or exc}",) + (None,) * 7 + ((),)
        finally:
            os.close(fd)
        return analyze_entry_bytes(name, data)

    def _read_index(self, *, attempts: int = 3) -> tuple[dict | None, str | None, os.stat_result | None]:
        """(index, problem, stat). Retries a read that may have caught aicache mid-rewrite."""
        path = self.root / INDEX_NAME
        problem = None
        st = None
        for attempt in range(attempts):
            try:
                st = os.stat(path)
            except FileNotFoundError:
                return None, "missing", None
            except OSError as exc:
                return None, f"cannot stat: {exc.strerror}", None
            if st.st_size > self.config.max_index_bytes:
                return None, f"{st.st_size} bytes, over the index size limit", st
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                try:
                    head = os.read(fd, 64)
                    first = head.lstrip()[:1]
                    if first and first not in (b"{", b"["):
                        data = head  # garbage: no need to read the rest of it
                    else:
                        rest = [head]
                        while chunk := os.read(fd, 1 << 22):
                            rest.append(chunk)
                        data = b"".join(rest)
                finally:
                    os.close(fd)
            except OSError as exc:
                return None, f"unreadable: {exc.strerror or exc}", st
            try:
                index = orjson.loads(data)
            except orjson.JSONDecodeError:
                problem = "empty" if not data.strip() else ("truncated JSON" if data.lstrip()[:1] == b"{" else "not JSON")
                if attempt + 1 < attempts:
                    time.sleep(0.05)
                continue
            if not isinstance(index, dict):
                return None, f"wrong shape: top level is {type(index).__name__}, not an object", st
            # whether any secret format occurs anywhere in the index: if not, previews need no scan
            self.index_may_hold_secrets = may_hold_secrets_bytes(data)
            return index, None, st
        return None, problem, st

    # ------------------------------------------------------------------ check
    def check(self, *, now: float | None = None, incremental: bool = True) -> CheckOutcome:
        now = time.time() if now is None else now
        reason = self._unreachable()
        if reason:
            return self._unreachable_outcome(reason)
        started = time.perf_counter()
        try:
            dir_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            return self._unreachable_outcome(f"cannot open {self.root}: {exc.strerror}")
        try:
            dir_mode = os.fstat(dir_fd).st_mode
            try:
                names = os.listdir(dir_fd)
            except OSError as exc:
                return self._unreachable_outcome(f"cannot list {self.root}: {exc.strerror}")
            entry_names: list[str] = []
            stray: list[tuple[str, int]] = []
            other_files = 0
            for name in names:
                if len(name) == 69 and ENTRY_RE.match(name):
                    entry_names.append(name)
                elif name == INDEX_NAME:
                    continue
                elif STRAY_RE.search(name):
                    try:
                        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                    except OSError:
                        continue
                    if not stat.S_ISDIR(st.st_mode):
                        stray.append((name, st.st_mtime_ns))
                else:
                    other_files += 1
        finally:
            os.close(dir_fd)

        # Entries and index records are split by the first character of their key, so that each
        # part can judge its entries *and* their index records on its own, in its own process.
        parts = max(1, self.config.scan_processes) if len(entry_names) >= self.config.parallel_min_entries else 1
        jobs = [(part, parts, entry_names, now, incremental) for part in range(parts)]
        results = _run_parts(self._scan_part, jobs)

        young_ns = int((now - self.config.grace_seconds) * 1e9)
        findings = [Finding(code, subject, detail) for result in results for code, subject, detail in result["findings"]]
        settling = sum(r["settling"] for r in results)
        total_bytes = sum(r["bytes"] for r in results)
        entries = sum(r["entries"] for r in results)
        index_records = sum(r["index_records"] for r in results)
        index_problem = results[0]["index_problem"]
        if dir_mode & 0o022:
            findings.append(Finding("fs.permissions", STORE, {"mode": f"{stat.S_IMODE(dir_mode):o}"}))
        for name, mtime_ns in stray:
            if mtime_ns > young_ns:
                settling += 1
            else:
                findings.append(Finding("fs.stray_file", name, {"mtime": mtime_ns / 1e9}))
        budget = self.config.byte_budget
        if budget is not None and total_bytes > budget:
            findings.append(Finding("fs.size_budget", STORE, {"bytes": total_bytes, "budget": budget, "over_by": total_bytes - budget}))
        try:
            usage = shutil.disk_usage(self.root)
            disk = {"free_bytes": usage.free, "total_bytes": usage.total, "free_ratio": usage.free / usage.total if usage.total else 0}
        except OSError:
            disk = {}
        metrics = {
            "entries": float(entries),
            "bytes": float(total_bytes),
            "read_latency_ms": self._sample_read_latency(entry_names) if entry_names else 0.0,
            "index_records": float(index_records),
        }
        if disk:
            metrics["disk_free_bytes"] = float(disk["free_bytes"])
        return CheckOutcome(
            reachable=True,
            findings=findings,
            metrics=metrics,
            settling=settling,
            stats={
                "entries": entries,
                "files_read": sum(r["files_read"] for r in results),
                "stray_files": len(stray),
                "other_files": other_files,
                "index_records": index_records,
                "bytes": total_bytes,
                "scan_seconds": round(time.perf_counter() - started, 3),
                "incremental": any(r["incremental"] for r in results),
                "processes": parts,
            },
            evidence={
                "disk": disk,
                "entries_total": entries,
                "corrupt_mtimes": sorted(t for r in results for t in r["corrupt_mtimes"])[:2000],
                "poisoned_timestamps": sorted(t for r in results for t in r["poisoned_timestamps"])[:2000],
                "index_problem": index_problem,
                "index_records": index_records,
            },
        )

    def _unreachable_outcome(self, reason: str) -> CheckOutcome:
        return CheckOutcome(reachable=False, error=reason, findings=[Finding("target.unreachable", str(self.root), {"reason": reason})])

    def _scan_part(self, part: int, parts: int, all_names: list[str], now: float, incremental: bool) -> dict[str, Any]:
        """Judge one part of the store: its entries (stat; read only what changed) and their index
        records. Returns plain data (it may run in a forked process)."""
        grace = self.config.grace_seconds
        young_ns = int((now - grace) * 1e9)
        tolerance = self.config.future_tolerance_seconds
        state_path = self._state_path(part, parts)
        state = self._load_state(state_path) if incremental else {}
        previous: dict[str, tuple] = state.get("entries", {})
        names = all_names if parts == 1 else [n for n in all_names if ord(n[0]) % parts == part]
        entries: dict[str, tuple] = {}
        findings: list[tuple[str, str, dict]] = []
        settling = files_read = total_bytes = 0
        corrupt_mtimes: list[float] = []
        poisoned_times: list[float] = []
        valid_keys: dict[str, tuple] = {}
        dir_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for name in names:
                try:
                    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                except OSError:
                    continue  # deleted between listing and stat
                s = previous.get(name)
                if s is None or s[S_MTIME] != st.st_mtime_ns or s[S_SIZE] != st.st_size or s[S_INO] != st.st_ino or s[S_CTIME] != st.st_ctime_ns:
                    s = (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns, st.st_mode) + self._read_entry(dir_fd, name, st)
                    files_read += 1
                entries[name] = s
                total_bytes += st.st_size
                if st.st_mode & 0o022:
                    findings.append(("fs.permissions", name, {"mode": f"{stat.S_IMODE(st.st_mode):o}"}))
                problem = s[S_PROBLEM]
                young = s[S_MTIME] > young_ns
                if problem:
                    kind, _, why = problem.partition(":")
                    code = PROBLEM_CODES[kind]
                    if young and code != "fs.entry_unreadable":
                        settling += 1
                        continue
                    findings.append((code, name, {"reason": why, "size": s[S_SIZE], "mtime": s[S_MTIME] / 1e9}))
                    if code == "fs.entry_corrupt":
                        corrupt_mtimes.append(s[S_MTIME] / 1e9)
                    continue
                valid_keys[name[:-5]] = s
                if young:
                    settling += 1  # a client may be mid-update: judge it next pass
                    continue
                if s[S_KEY] is not None:
                    findings.append(("fs.entry_key_mismatch", name, {"key_field": str(s[S_KEY])[:80]}))
                ts, ttl, last = s[S_TS], s[S_TTL], s[S_LAST]
                if ttl is not None and ts + ttl < now:
                    findings.append(("fs.entry_expired", name, {"expired_at": ts + ttl, "ttl_seconds": ttl, "bytes": s[S_SIZE]}))
                if ts > now + tolerance or (last is not None and last > now + tolerance):
                    findings.append(("fs.entry_future", name, {"timestamp": ts, "last_accessed": last, "ahead_seconds": round(max(ts, last or 0) - now, 1)}))
                if s[S_POISON]:
                    findings.append(("ai.poisoned_response", name, {"reason": s[S_POISON], "timestamp": ts}))
                    poisoned_times.append(ts)
                if s[S_SECRETS]:
                    findings.append(("ai.secret_leak", name, {"where": "response", "found": list(s[S_SECRETS])}))
        finally:
            os.close(dir_fd)

        index, index_problem, index_st = self._read_index()
        index_records = 0
        first_seen: dict[str, float] = state.get("first_seen", {}) if isinstance(state.get("first_seen"), dict) else {}
        seen_now: dict[str, float] = {}

        def stable(token: str, mtime: float) -> bool:
            """Old enough to judge, or already seen for a whole grace period."""
            seen_now[token] = first_seen.get(token, now)
            return mtime <= now - grace or now - seen_now[token] >= grace

        if index_problem is not None:
            if part == 0:
                if index_problem == "missing":
                    newest = max((st[S_MTIME] for st in entries.values()), default=0) / 1e9
                    if all_names and stable("index", newest):
                        findings.append(("fs.index_unreadable", INDEX_NAME, {"reason": "missing while entries exist", "entries": len(all_names)}))
                    elif all_names:
                        settling += 1
                elif stable("index", index_st.st_mtime if index_st else 0):
                    findings.append(("fs.index_unreadable", INDEX_NAME, {"reason": index_problem}))
                else:
                    settling += 1
        else:
            assert index is not None
            index_mtime = index_st.st_mtime if index_st else 0
            mine = index if parts == 1 else {k: r for k, r in index.items() if ord(k[0] if k else "0") % parts == part}
            index_records = len(mine)
            # one pass of substring searches over the previews decides whether each needs scanning
            scan_previews = self.index_may_hold_secrets
            for key, record in mine.items():
                name = f"{key}.json"
                s = valid_keys.get(key)
                if s is None:
                    if name in entries:
                        continue  # the entry itself is broken and reported as such
                    if stable("dangling:" + key, index_mtime):
                        findings.append(("fs.index_dangling", name, {"key": key}))
                    else:
                        settling += 1
                    continue
                if s[S_MTIME] <= young_ns:
                    # fast path: aicache writes the same floats it read, so equal records compare exactly
                    try:
                        in_sync = (
                            record["created_at"] == s[S_TS]
                            and record["response_length"] == s[S_VLEN]
                            and record["access_count"] == s[S_ACC]
                            and record["last_accessed"] == s[S_LAST]
                        )
                    except (KeyError, TypeError):
                        in_sync = False
                    if not in_sync:
                        diffs = record_disagreement(record, s)
                        if diffs:
                            findings.append(("fs.index_stale", name, {"fields": diffs}))
                if scan_previews and isinstance(record, dict):
                    preview = record.get("prompt_preview")
                    if isinstance(preview, str) and preview:
                        leaked = find_secrets(preview)
                        if leaked:
                            findings.append(("ai.secret_leak", name, {"where": "index prompt_preview", "found": leaked}))
            for key, s in valid_keys.items():
                if key not in index:
                    if s[S_MTIME] <= young_ns:
                        findings.append(("fs.index_orphan", f"{key}.json", {"key": key}))
                    else:
                        settling += 1

        self._save_state(state_path, {"v": STATE_VERSION, "root": str(self.root), "entries": entries, "first_seen": seen_now})
        return {
            "findings": findings,
            "settling": settling,
            "files_read": files_read,
            "bytes": total_bytes,
            "entries": len(entries),
            "index_records": index_records,
            "index_problem": index_problem,
            "corrupt_mtimes": corrupt_mtimes,
            "poisoned_timestamps": poisoned_times,
            "incremental": bool(previous),
        }

    def _sample_read_latency(self, names: list[str]) -> float:
        """Median time to open and read one entry, over a small random sample, in ms."""
        sample = random.sample(names, min(self.config.latency_sample_size, len(names)))
        timings = []
        for name in sample:
            started = time.perf_counter()
            try:
                fd = os.open(self.root / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                try:
                    os.read(fd, 1 << 16)
                finally:
                    os.close(fd)
            except OSError:
                continue
            timings.append((time.perf_counter() - started) * 1000)
        if not timings:
            return 0.0
        timings.sort()
        return round(timings[len(timings) // 2], 4)

    # ------------------------------------------------------------------ recheck
    def recheck(self, subjects: list[str], *, now: float | None = None) -> list[Finding]:
        """The truth about these subjects now, read fresh, without grace or cached state."""
        now = time.time() if now is None else now
        reason = self._unreachable()
        if reason:
            return [Finding("target.unreachable", str(self.root), {"reason": reason})]
        findings: list[Finding] = []
        index, index_problem, _ = self._read_index()
        tolerance = self.config.future_tolerance_seconds
        for subject in subjects:
            if subject == STORE:
                st = os.stat(self.root)
                if st.st_mode & 0o022:
                    findings.append(Finding("fs.permissions", STORE, {"mode": f"{stat.S_IMODE(st.st_mode):o}"}))
                if self.config.byte_budget is not None:
                    total = self._total_entry_bytes()
                    if total > self.config.byte_budget:
                        findings.append(Finding("fs.size_budget", STORE, {"bytes": total, "budget": self.config.byte_budget}))
                continue
            if subject == INDEX_NAME:
                if index_problem is not None and (index_problem != "missing" or self._has_entries()):
                    findings.append(Finding("fs.index_unreadable", INDEX_NAME, {"reason": index_problem}))
                continue
            path = self.root / subject
            if not ENTRY_RE.match(subject):
                if STRAY_RE.search(subject) and os.path.lexists(path):
                    findings.append(Finding("fs.stray_file", subject))
                continue
            key = subject[:-5]
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                if isinstance(index, dict) and key in index:
                    findings.append(Finding("fs.index_dangling", subject, {"key": key}))
                continue
            if st.st_mode & 0o022:
                findings.append(Finding("fs.permissions", subject, {"mode": f"{stat.S_IMODE(st.st_mode):o}"}))
            dir_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
            try:
                s = (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns, st.st_mode) + self._read_entry(dir_fd, subject, st)
            finally:
                os.close(dir_fd)
            if s[S_PROBLEM]:
                kind, _, why = s[S_PROBLEM].partition(":")
                code = {"corrupt": "fs.entry_corrupt", "schema": "fs.entry_schema", "unreadable": "fs.entry_unreadable"}[kind]
                findings.append(Finding(code, subject, {"reason": why}))
                continue
            if s[S_KEY] is not None:
                findings.append(Finding("fs.entry_key_mismatch", subject))
            if s[S_TTL] is not None and s[S_TS] + s[S_TTL] < now:
                findings.append(Finding("fs.entry_expired", subject))
            if s[S_TS] > now + tolerance or (s[S_LAST] is not None and s[S_LAST] > now + tolerance):
                findings.append(Finding("fs.entry_future", subject))
            if s[S_POISON]:
                findings.append(Finding("ai.poisoned_response", subject, {"reason": s[S_POISON]}))
            if s[S_SECRETS]:
                findings.append(Finding("ai.secret_leak", subject, {"where": "response"}))
            if isinstance(index, dict):
                record = index.get(key)
                if record is None:
                    findings.append(Finding("fs.index_orphan", subject))
                else:
                    diffs = record_disagreement(record, s)
                    if diffs:
                        findings.append(Finding("fs.index_stale", subject, {"fields": diffs}))
                    preview = record.get("prompt_preview") if isinstance(record, dict) else None
                    if isinstance(preview, str) and find_secrets(preview):
                        findings.append(Finding("ai.secret_leak", subject, {"where": "index prompt_preview"}))
        return findings

    def _has_entries(self) -> bool:
        with os.scandir(self.root) as it:
            return any(ENTRY_RE.match(de.name) for de in it)

    def _entry_stats(self) -> list[tuple[str, os.stat_result]]:
        out = []
        with os.scandir(self.root) as it:
            for de in it:
                if ENTRY_RE.match(de.name):
                    try:
                        out.append((de.name, de.stat(follow_symlinks=False)))
                    except OSError:
                        continue
        return out

    def _total_entry_bytes(self) -> int:
        return sum(st.st_size for _, st in self._entry_stats())

    # ------------------------------------------------------------------ planning
    def fingerprint(self, subject: str) -> str:
        return self.fingerprints([subject])[subject]

    def fingerprints(self, subjects: list[str]) -> dict[str, str]:
        """The state of each subject (file, and index record for entries) that a plan is made on."""
        index = problem = None
        out: dict[str, str] = {}
        for subject in subjects:
            if subject == STORE:
                out[subject] = f"dir:{stat.S_IMODE(os.stat(self.root).st_mode):o}"
                continue
            file_part = file_fingerprint(self.root / subject)
            if ENTRY_RE.match(subject):
                if index is None and problem is None:
                    index, problem, _ = self._read_index()
                record = index.get(subject[:-5]) if isinstance(index, dict) else f"index:{problem}"
                file_part += "|" + sha256_bytes(json.dumps(record, sort_keys=True, default=str).encode())[:16]
            out[subject] = file_part
        return out

    def plan(self, code: str, subjects: list[str], *, now: float | None = None) -> PlanDraft:
        spec = check_spec(code)
        action = spec.repair
        if action is None:
            raise BackendError(f"{code} has no repair: it is for a person to act on")
        risk = REPAIRS[action].risk
        ops: list[dict[str, Any]] = []
        skipped: list[dict[str, Any]] = []
        blast_bytes = 0
        prints = self.fingerprints([s for s in subjects if action not in {"rebuild_index", "evict_lru"}])

        def size_of(name: str) -> int:
            try:
                return os.lstat(self.root / name).st_size
            except OSError:
                return 0

        if action in {"quarantine_entries", "quarantine_files"}:
            for name in subjects:
                if not os.path.lexists(self.root / name):
                    skipped.append({"subject": name, "reason": "already gone"})
                    continue
                size = size_of(name)
                blast_bytes += size
                ops.append({"op": "quarantine", "subject": name, "bytes": size, "fingerprint": prints[name], "drop_index_record": action == "quarantine_entries"})
        elif action in {"rewrite_key_field", "clamp_timestamps"}:
            for name in subjects:
                ops.append({"op": "rewrite_key" if action == "rewrite_key_field" else "clamp_timestamps", "subject": name, "fingerprint": prints[name]})
                blast_bytes += size_of(name)
        elif action in {"restore_read_permission", "tighten_permissions"}:
            for name in subjects:
                path = self.root if name == STORE else self.root / name
                try:
                    lst = os.lstat(path)
                except OSError:
                    skipped.append({"subject": name, "reason": "already gone"})
                    continue
                if stat.S_ISLNK(lst.st_mode):
                    skipped.append({"subject": name, "reason": "a symbolic link: a person must look at where it points"})
                    continue
                mode = stat.S_IMODE(lst.st_mode)
                new_mode = (mode | stat.S_IRUSR | stat.S_IWUSR) if action == "restore_read_permission" else (mode & ~0o022)
                if os.path.isdir(path) and action == "restore_read_permission":
                    new_mode |= stat.S_IXUSR
                ops.append({"op": "chmod", "subject": name, "mode_from": f"{mode:o}", "mode_to": f"{new_mode:o}", "fingerprint": prints[name]})
        elif action == "index_resync":
            index, problem, _ = self._read_index()
            if index is None:
                raise BackendError(f"the index is unreadable ({problem}); rebuild it first")
            for name in subjects:
                key = name[:-5]
                exists = os.path.lexists(self.root / name)
                change = "remove" if not exists else ("add" if key not in index else "update")
                ops.append({"op": "index_" + change, "subject": name, "key": key, "fingerprint": prints[name]})
        elif action == "rebuild_index":
            names = [n for n, _ in self._entry_stats()]
            ops.append({"op": "index_rebuild", "subject": INDEX_NAME, "fingerprint": file_fingerprint(self.root / INDEX_NAME), "entries": len(names)})
        elif action == "evict_lru":
            budget = self.config.byte_budget
            if budget is None:
                raise BackendError("the target has no byte budget")
            candidates = []
            total = 0
            dir_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
            try:
                for name, st in self._entry_stats():
                    total += st.st_size
                    s = (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns, st.st_mode) + self._read_entry(dir_fd, name, st)
                    last = s[S_LAST] if s[S_LAST] is not None else (s[S_TS] if s[S_TS] is not None else st.st_mtime)
                    candidates.append((last, name, st.st_size))
            finally:
                os.close(dir_fd)
            candidates.sort()
            chosen = []
            for last, name, size in candidates:
                if total <= budget:
                    break
                chosen.append((last, name, size))
                total -= size
            prints = self.fingerprints([name for _, name, _ in chosen])
            for last, name, size in chosen:
                ops.append({"op": "quarantine", "subject": name, "bytes": size, "last_accessed": last, "fingerprint": prints[name], "drop_index_record": True})
                blast_bytes += size
        else:  # pragma: no cover - the catalogue and this switch are kept together
            raise BackendError(f"unknown action {action}")
        entries_touched = ops[0]["entries"] if action == "rebuild_index" else len(ops)
        return PlanDraft(
            action=action,
            risk=risk,
            operations=ops,
            blast_entries=entries_touched,
            blast_bytes=blast_bytes,
            summary=f"{REPAIRS[action].title}: {len(ops)} operation(s) on {self.root}",
            skipped=skipped,
        )

    # ------------------------------------------------------------------ apply
    def apply(self, plan: dict[str, Any], workdir: Path) -> ApplyResult:
        """Carry out a plan. Every step is journalled in `workdir/journal.jsonl` before it happens,
        so a later rollback (or a worker that takes over after a crash) can undo exactly what was done."""
        workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        journal = Journal(workdir / "journal.jsonl")
        applied: list[dict[str, Any]] = []
        skipped: list[dict[str, Any]] = []
        index_changes: dict[str, Any] = {}
        ops = plan["operations"]
        current = self.fingerprints([op["subject"] for op in ops if op["op"] != "index_rebuild"])
        handlers = {
            "quarantine": self._apply_quarantine,
            "rewrite_key": self._apply_rewrite,
            "clamp_timestamps": self._apply_clamp,
            "chmod": self._apply_chmod,
            "index_add": self._apply_index,
            "index_update": self._apply_index,
            "index_remove": self._apply_index,
            "index_rebuild": self._apply_index,
        }
        for seq, op in enumerate(ops):
            subject = op["subject"]
            if op["op"] != "index_rebuild" and current.get(subject) != op["fingerprint"]:
                skipped.append({"subject": subject, "reason": "changed since the plan was approved"})
                journal.write({"seq": seq, "phase": "skip", "op": op["op"], "subject": subject, "reason": "drifted"})
                continue
            outcome = handlers[op["op"]](seq, op, workdir, journal, index_changes)
            if outcome is None:
                applied.append({"subject": subject, "op": op["op"]})
            else:
                skipped.append({"subject": subject, "reason": outcome})
        if index_changes:
            self._commit_index_changes(index_changes, workdir, journal)
        journal.write({"phase": "complete", "applied": len(applied), "skipped": len(skipped)})
        self._write_manifest(workdir, journal)
        return ApplyResult(applied=applied, skipped=skipped)

    def _apply_quarantine(self, seq: int, op: dict, workdir: Path, journal: Journal, index_changes: dict) -> str | None:
        src = self.root / op["subject"]
        try:
            st = os.lstat(src)
        except FileNotFoundError:
            return "already gone"
        dest = workdir / "files" / op["subject"]
        journal.write({"seq": seq, "phase": "intent", "op": "quarantine", "subject": op["subject"], "quarantined_as": str(dest.relative_to(workdir)),
                       "size": st.st_size, "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid,
                       "atime_ns": st.st_atime_ns, "mtime_ns": st.st_mtime_ns})
        if dest.exists():
            dest.unlink()  # a previous attempt copied but did not finish: copy again
        digest = copy_exact(src, dest)
        reason = take_out(src, digest, workdir / "client-writes")
        if reason is not None:
            dest.unlink(missing_ok=True)
            journal.write({"seq": seq, "phase": "skip", "subject": op["subject"], "reason": reason})
            return reason
        journal.write({"seq": seq, "phase": "done", "op": "quarantine", "subject": op["subject"], "sha256": digest})
        if op.get("drop_index_record"):
            index_changes[op["subject"][:-5]] = None
        return None

    def _rewrite_entry(self, seq: int, op: dict, workdir: Path, journal: Journal, transform) -> str | None:
        path = self.root / op["subject"]
        original = read_bytes(path)
        st = os.lstat(path)
        try:
            obj = json.loads(original)
        except ValueError:
            return "entry no longer parses"
        new_bytes = json.dumps(transform(obj), indent=2).encode()
        backup = workdir / "files" / op["subject"]
        backup.parent.mkdir(parents=True, exist_ok=True)
        if not backup.exists():
            copy_exact(path, backup)
        journal.write({"seq": seq, "phase": "intent", "op": "rewrite", "subject": op["subject"], "backup": str(backup.relative_to(workdir)),
                       "sha256_before": sha256_bytes(original), "mode": stat.S_IMODE(st.st_mode), "atime_ns": st.st_atime_ns, "mtime_ns": st.st_mtime_ns})
        reason = swap_in(path, new_bytes, original, mode=stat.S_IMODE(st.st_mode), keep_dir=workdir / "client-writes")
        if reason is not None:
            journal.write({"seq": seq, "phase": "skip", "subject": op["subject"], "reason": reason})
            return reason
        journal.write({"seq": seq, "phase": "done", "op": "rewrite", "subject": op["subject"], "sha256_after": sha256_bytes(new_bytes)})
        return None

    def _apply_rewrite(self, seq: int, op: dict, workdir: Path, journal: Journal, index_changes: dict) -> str | None:
        key = op["subject"][:-5]
        return self._rewrite_entry(seq, op, workdir, journal, lambda obj: {**obj, "key": key})

    def _apply_clamp(self, seq: int, op: dict, workdir: Path, journal: Journal, index_changes: dict) -> str | None:
        now = time.time()

        def clamp(obj: dict) -> dict:
            out = dict(obj)
            for field in ("timestamp", "last_accessed"):
                if _is_num(out.get(field)) and out[field] > now:
                    out[field] = now
            return out

        outcome = self._rewrite_entry(seq, op, workdir, journal, clamp)
        if outcome is None:
            index_changes[op["subject"][:-5]] = "from_entry_if_present"
        return outcome

    def _apply_chmod(self, seq: int, op: dict, workdir: Path, journal: Journal, index_changes: dict) -> str | None:
        path = self.root if op["subject"] == STORE else self.root / op["subject"]
        if stat.S_ISLNK(os.lstat(path).st_mode):
            return "a symbolic link"
        journal.write({"seq": seq, "phase": "intent", "op": "chmod", "subject": op["subject"], "mode_from": op["mode_from"], "mode_to": op["mode_to"]})
        os.chmod(path, int(op["mode_to"], 8))
        journal.write({"seq": seq, "phase": "done", "op": "chmod", "subject": op["subject"]})
        return None

    def _apply_index(self, seq: int, op: dict, workdir: Path, journal: Journal, index_changes: dict) -> str | None:
        if op["op"] == "index_rebuild":
            return self._rebuild_index(seq, op, workdir, journal)
        key = op["key"]
        index_changes[key] = None if op["op"] == "index_remove" else "from_entry"
        return None

    def _entry_object(self, key: str) -> dict | None:
        try:
            obj = orjson.loads(read_bytes(self.root / f"{key}.json"))
        except (OSError, orjson.JSONDecodeError):
            return None
        return obj if isinstance(obj, dict) and isinstance(obj.get("value"), str) and _is_num(obj.get("timestamp")) else None

    def _commit_index_changes(self, changes: dict[str, Any], workdir: Path, journal: Journal) -> None:
        """Apply record-level changes to the index as it is *now*, keeping whatever the client wrote.

        The index stays in place for readers (atomic rename). A client that opened the old index just
        before the rename writes into the old inode: we hold that inode open, see its bytes change, and
        merge what it wrote before trying again.
        """
        path = self.root / INDEX_NAME
        backup = workdir / "index.before"
        first_original: bytes | None = None
        for _attempt in range(50):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            except FileNotFoundError:
                fd = None
            try:
                original = _read_fd(fd) if fd is not None else None
                mode = stat.S_IMODE(os.fstat(fd).st_mode) if fd is not None else 0o644
                if original is not None and original.strip():
                    try:
                        index = orjson.loads(original)
                    except orjson.JSONDecodeError:
                        time.sleep(0.01)  # caught the client mid-write: read again
                        continue
                    if not isinstance(index, dict):
                        raise BackendError("the index is not a JSON object; rebuild it first")
                else:
                    index = {}
                if first_original is None:
                    first_original = original if original is not None else b""
                    if original is not None:
                        backup.write_bytes(original)
                    journal.write({"phase": "intent", "op": "index_edit",
                                   "records_before": {key: index.get(key) for key in changes},
                                   "index_sha256_before": sha256_bytes(original) if original is not None else None,
                                   "index_backup": "index.before" if original is not None else None})
                for key, change in changes.items():
                    if change is None:
                        index.pop(key, None)
                        continue
                    if change == "from_entry_if_present" and key not in index:
                        continue
                    entry = self._entry_object(key)
                    if entry is None:
                        continue
                    old = index.get(key)
                    preview = old.get("prompt_preview", "") if isinstance(old, dict) else ""
                    index[key] = index_record_for(entry, preview)
                new_bytes = json.dumps(index).encode()
                atomic_write(path, new_bytes, mode=mode)
                if fd is not None and _read_fd(fd) != original:
                    continue  # the client wrote into the old index as we swapped it: merge that too
            finally:
                if fd is not None:
                    os.close(fd)
            journal.write({"phase": "done", "op": "index_edit", "index_sha256_after": sha256_bytes(new_bytes),
                           "records_after": {k: index.get(k) for k in changes}})
            return
        raise BackendError("the index kept changing under the repair; it will be retried")

    def _rebuild_index(self, seq: int, op: dict, workdir: Path, journal: Journal) -> str | None:
        path = self.root / INDEX_NAME
        old_index, _problem, _ = self._read_index()
        original = read_bytes(path) if path.exists() else None
        if original is not None:
            (workdir / "index.before").write_bytes(original)
        journal.write({"seq": seq, "phase": "intent", "op": "index_rebuild", "index_sha256_before": sha256_bytes(original) if original is not None else None,
                       "index_backup": "index.before" if original is not None else None})
        rebuilt: dict[str, Any] = {}
        for name, _st in self._entry_stats():
            entry = self._entry_object(name[:-5])
            if entry is None:
                continue
            old = old_index.get(name[:-5]) if isinstance(old_index, dict) else None
            rebuilt[name[:-5]] = index_record_for(entry, old.get("prompt_preview", "") if isinstance(old, dict) else "")
        # the client may have written a good index meanwhile: what it knows wins
        current, _, _ = self._read_index(attempts=1)
        if isinstance(current, dict):
            rebuilt.update(current)
        mode = stat.S_IMODE(os.stat(path).st_mode) if path.exists() else 0o644
        digest = atomic_write(path, json.dumps(rebuilt).encode(), mode=mode)
        journal.write({"seq": seq, "phase": "done", "op": "index_rebuild", "index_sha256_after": digest, "records": len(rebuilt)})
        return None

    def _write_manifest(self, workdir: Path, journal: Journal) -> None:
        manifest = {"store": str(self.root), "kind": self.kind, "written_at": time.time(), "items": journal.read()}
        (workdir / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))

    # ------------------------------------------------------------------ rollback
    def rollback(self, workdir: Path) -> dict[str, Any]:
        """Undo what the journal says was done, newest first. Idempotent: safe to run twice or after a crash.

        Files come back byte-for-byte with their mode and times. Where the client wrote a subject after
        the repair, the client's write wins and the item is reported as superseded.
        """
        journal = Journal(workdir / "journal.jsonl")
        records = journal.read()
        restored: list[str] = []
        superseded: list[dict[str, str]] = []
        intents = [r for r in records if r.get("phase") == "intent"]
        done = {(r.get("seq"), r.get("op")): r for r in records if r.get("phase") == "done"}
        for intent in reversed(intents):
            op = intent["op"]
            if op == "quarantine":
                src = workdir / intent["quarantined_as"]
                dest = self.root / intent["subject"]
                if not src.exists():
                    continue  # never copied: nothing was removed
                if os.path.lexists(dest):
                    if (intent["seq"], "quarantine") not in done and sha256_file(dest) == sha256_file(src):
                        src.unlink()  # crashed before unlinking the original: it is still in place
                        restored.append(intent["subject"])
                    else:
                        superseded.append({"subject": intent["subject"], "reason": "the client wrote a new entry under this name"})
                    continue
                if not create_exclusive(dest, read_bytes(src), mode=intent["mode"], times_ns=(intent["atime_ns"], intent["mtime_ns"])):
                    superseded.append({"subject": intent["subject"], "reason": "the client wrote a new entry under this name"})
                    continue
                try:
                    os.chown(dest, intent["uid"], intent["gid"])
                except PermissionError:
                    pass
                src.unlink()
                restored.append(intent["subject"])
            elif op == "rewrite":
                path = self.root / intent["subject"]
                after = done.get((intent["seq"], "rewrite"), {}).get("sha256_after")
                current = sha256_file(path) if path.exists() else None
                if current == intent["sha256_before"]:
                    continue
                if after is not None and current != after:
                    superseded.append({"subject": intent["subject"], "reason": "the client rewrote the entry after the repair"})
                    continue
                reason = swap_in(path, read_bytes(workdir / intent["backup"]), read_bytes(path), mode=intent["mode"],
                                 keep_dir=workdir / "client-writes", times_ns=(intent["atime_ns"], intent["mtime_ns"]))
                if reason is None:
                    restored.append(intent["subject"])
                else:
                    superseded.append({"subject": intent["subject"], "reason": reason})
            elif op == "chmod":
                path = self.root if intent["subject"] == STORE else self.root / intent["subject"]
                try:
                    lst = os.lstat(path)
                    if not stat.S_ISLNK(lst.st_mode) and f"{stat.S_IMODE(lst.st_mode):o}" == intent["mode_to"]:
                        os.chmod(path, int(intent["mode_from"], 8))
                        restored.append(intent["subject"])
                except FileNotFoundError:
                    superseded.append({"subject": intent["subject"], "reason": "gone"})
            elif op in {"index_edit", "index_rebuild"}:
                self._rollback_index(intent, records, workdir, restored, superseded)
        journal.write({"phase": "rolled_back", "restored": len(restored), "superseded": len(superseded)})
        return {"restored": restored, "superseded": superseded}

    def _rollback_index(self, intent: dict, records: list[dict], workdir: Path, restored: list, superseded: list) -> None:
        path = self.root / INDEX_NAME
        done = next((r for r in records if r.get("phase") == "done" and r.get("op") == intent["op"]), None)
        current = sha256_file(path) if path.exists() else None
        if current is not None and current == intent.get("index_sha256_before"):
            return
        if done is None or current == done.get("index_sha256_after"):
            # nobody wrote the index since the repair: restore it byte-for-byte
            if intent.get("index_backup"):
                original = workdir / intent["index_backup"]
                atomic_write(path, read_bytes(original), mode=stat.S_IMODE(os.stat(path).st_mode) if path.exists() else 0o644)
            elif path.exists():
                path.unlink()
            restored.append(INDEX_NAME)
            return
        if intent["op"] == "index_rebuild":
            superseded.append({"subject": INDEX_NAME, "reason": "the client rewrote the index after the rebuild"})
            return
        # the client rewrote the index since: put back only our records, keep the rest of its writes
        changes = intent.get("records_before", {})
        for _attempt in range(20):
            index, problem, st = self._read_index()
            if index is None:
                superseded.append({"subject": INDEX_NAME, "reason": f"index unreadable at rollback ({problem})"})
                return
            for key, record in changes.items():
                if record is None:
                    index.pop(key, None)
                else:
                    index[key] = record
            sig = (st.st_mtime_ns, st.st_size, st.st_ino)
            data = json.dumps(index).encode()
            now_st = os.stat(path)
            if (now_st.st_mtime_ns, now_st.st_size, now_st.st_ino) != sig:
                continue
            atomic_write(path, data, mode=stat.S_IMODE(st.st_mode))
            restored.append(INDEX_NAME + " (records merged)")
            return
        superseded.append({"subject": INDEX_NAME, "reason": "the index kept changing during rollback"})


def _run_parts(fn, jobs: list[tuple]) -> list[dict[str, Any]]:
    try:
        return run_parts(fn, jobs)
    except PartFailed as exc:
        raise BackendError(f"a scan process failed: {exc}") from exc


def _read_fd(fd: int) -> bytes:
    chunks, offset = [], 0
    while chunk := os.pread(fd, 1 << 22, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


class Journal:
    """Append-only JSON lines, fsynced per record: the write-ahead log of one repair."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, default=str) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self) -> list[dict[str, Any]]:
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                break  # a torn last line from a crash: everything before it is intact
        return out

