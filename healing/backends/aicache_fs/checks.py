"""The checks: one pass over the directory (split by key across processes for large stores), and a
fresh re-check of named subjects for verification."""

from __future__ import annotations

import os
import random
import shutil
import stat
import time
from typing import Any

from config.forking import PartFailed, run_parts
from healing.backends.aicache_fs.format import (
    ENTRY_RE,
    INDEX_NAME,
    PROBLEM_CODES,
    S_ACC,
    S_CTIME,
    S_INO,
    S_KEY,
    S_LAST,
    S_MTIME,
    S_POISON,
    S_PROBLEM,
    S_SECRETS,
    S_SIZE,
    S_TS,
    S_TTL,
    S_VLEN,
    STATE_VERSION,
    STORE,
    STRAY_RE,
    record_disagreement,
)
from healing.backends.aicache_fs.store import StoreAccess
from healing.backends.base import (
    BackendError,
    CheckOutcome,
    Finding,
)
from healing.content import find_secrets, secret_candidates


class Checks(StoreAccess):
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
            previews: list[str] = []
            preview_keys: list[str] = []
            for key, record in index.items():
                if parts > 1 and ord(key[0] if key else "0") % parts != part:
                    continue  # another part's record
                index_records += 1
                s = valid_keys.get(key)
                if s is None:
                    name = f"{key}.json"
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
                            findings.append(("fs.index_stale", f"{key}.json", {"fields": diffs}))
                preview = record.get("prompt_preview") if isinstance(record, dict) else None
                if isinstance(preview, str) and preview:
                    previews.append(preview)
                    preview_keys.append(key)
            # the previews of a whole part searched at once: only those where a secret format may occur
            # are scanned with the patterns
            for i in secret_candidates(previews):
                leaked = find_secrets(previews[i])
                if leaked:
                    findings.append(("ai.secret_leak", f"{preview_keys[i]}.json", {"where": "index prompt_preview", "found": leaked}))
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


def _run_parts(fn, jobs: list[tuple]) -> list[dict[str, Any]]:
    try:
        return run_parts(fn, jobs)
    except PartFailed as exc:
        raise BackendError(f"a scan process failed: {exc}") from exc
