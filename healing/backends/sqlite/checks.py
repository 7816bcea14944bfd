"""Checks of a SQLite LLM cache: the file (integrity, indexes, free pages, WAL, journal mode), every row
as its client decodes it, and the AI checks on what the rows say."""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import time
from typing import Any

from config.forking import PartFailed, run_parts
from healing.backends.base import BackendError, CheckOutcome, Finding
from healing.backends.entries import EntryChecks
from healing.backends.sqlite.layouts import GptCacheDb, Layout, row_digest
from healing.backends.sqlite.store import SqliteStore, Unreachable, is_damage

DATABASE = "database"
WAL = "wal"
_INDEX_WORDS = ("index", "missing from index", "wrong # of entries")


def _classify(messages: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Split integrity_check messages into damage of the file and disagreement of named indexes."""
    damage: list[str] = []
    indexes: dict[str, list[str]] = {}
    for message in messages:
        lowered = message.lower()
        if any(word in lowered for word in _INDEX_WORDS) and ("row " in lowered or "wrong #" in lowered):
            name = message.rsplit(" ", 1)[-1]
            indexes.setdefault(name, []).append(message)
        else:
            damage.append(message)
    return damage, indexes


class Checks(SqliteStore):
    # ------------------------------------------------------------------ state between runs
    def _state(self) -> dict[str, Any]:
        path = self.config.state_path
        if path is None:
            return {}
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {}

    def _save_state(self, state: dict[str, Any]) -> None:
        path = self.config.state_path
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, path)

    def describe(self) -> dict[str, Any]:
        try:
            conn = self.connect()
        except BackendError as exc:
            return {"kind": self.kind, "path": str(self.path), "error": str(exc)}
        try:
            layout = self.layout(conn)
            return {"kind": self.kind, "path": str(self.path), "layout": layout.name, "title": layout.title}
        except (BackendError, sqlite3.DatabaseError) as exc:
            return {"kind": self.kind, "path": str(self.path), "error": str(exc)}
        finally:
            conn.close()

    # ------------------------------------------------------------------ file-level checks
    def _file_findings(self, conn: sqlite3.Connection, *, full: bool) -> tuple[list[Finding], dict[str, float], dict[str, Any]]:
        findings: list[Finding] = []
        opt = self.config.opt
        pragma = "integrity_check" if full else "quick_check"
        try:
            messages = [r[0] for r in conn.execute(f"PRAGMA {pragma}(200)")]
        except sqlite3.DatabaseError as exc:
            messages = [f"{pragma} could not run: {exc}"]
        messages = [m for m in messages if m != "ok"]
        damage, indexes = _classify(messages)
        if damage:
            findings.append(Finding("sqlite.integrity", DATABASE, {"check": pragma, "messages": damage[:20], "count": len(damage)}))
        for name, lines in sorted(indexes.items()):
            findings.append(Finding("sqlite.index_corrupt", f"index:{name}", {"messages": lines[:10], "count": len(lines)}))
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        page_count = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
        free_bytes = free * page_size
        share = free / page_count if page_count else 0.0
        if share >= float(opt("freelist_share", 0.25)) and free_bytes >= int(opt("freelist_min_bytes", 1 << 20)):
            findings.append(Finding("sqlite.freelist_bloat", DATABASE, {"free_pages": free, "page_count": page_count, "free_bytes": free_bytes,
                                                                         "share": round(share, 3)}))
        wal = self.wal_bytes()
        db_bytes = page_size * page_count
        if wal >= int(opt("wal_max_bytes", 64 << 20)) and wal >= float(opt("wal_max_share", 0.5)) * db_bytes:
            findings.append(Finding("sqlite.wal_bloat", WAL, {"wal_bytes": wal, "database_bytes": db_bytes}))
        risky = mode in ("off", "memory")
        if risky or (mode != "wal" and bool(opt("require_wal", False))):
            findings.append(Finding("sqlite.journal_mode", DATABASE, {"journal_mode": mode,
                                    "why": "no rollback journal: a crash mid-write damages the file" if risky else "readers block the writer"}))
        metrics = {"bytes": float(db_bytes + wal), "free_pages": float(free), "wal_bytes": float(wal)}
        stats = {"journal_mode": mode, "page_size": page_size, "page_count": page_count, "integrity": pragma}
        return findings, metrics, stats

    # ------------------------------------------------------------------ rows
    def _scan_part(self, part: str, lo: int | None = None, hi: int | None = None) -> dict[str, Any]:
        """One independent part of a check, on its own connection (it may run in a forked process):
        'file' runs the file checks; 'rows' scans the entry table's rows lo..hi; 'all_rows' scans every
        table of the layout. Returns plain data."""
        conn = self.connect()
        try:
            if part == "file":
                findings, metrics, stats = self._file_findings(conn, full=bool(lo))
                return {"findings": [(f.code, f.subject, f.detail) for f in findings], "metrics": metrics, "stats": stats}
            layout = self.layout(conn)
            return self._row_scan(conn, layout, lo, hi, everything=part == "all_rows")
        finally:
            conn.close()

    def _row_scan(self, conn: sqlite3.Connection, layout: Layout, lo: int | None, hi: int | None, *, everything: bool) -> dict[str, Any]:
        checks = EntryChecks(self.config.allowed_models)
        findings = checks.findings
        damaged: list[dict] = []
        entries = 0
        soft_deleted: set[int] = set()
        decode = layout.decode
        batch: list = []  # entries are checked a thousand at a time: the content tests' pre-filters work per batch
        for row in self.readable_rows(conn, layout.entry_table, layout.columns, damaged=damaged, lo=lo, hi=hi):
            entries += 1
            decoded = decode(row)
            if decoded.problem:
                findings.append(Finding("sqlite.row_undecodable", f"{layout.entry_table}:{row[0]}", {"why": decoded.problem}))
            elif decoded.entry is not None:
                batch.append(decoded.entry)
                if len(batch) >= 1000:
                    checks.feed_many(batch)
                    batch = []
            elif isinstance(layout, GptCacheDb):
                soft_deleted.add(row[0])
        if everything and isinstance(layout, GptCacheDb):
            for row in self.readable_rows(conn, "gptcache_answer", "question_id, answer, answer_type", damaged=damaged):
                decoded = layout.decode_answer(row, soft_deleted)
                if decoded.problem:
                    findings.append(Finding("sqlite.row_undecodable", f"gptcache_answer:{row[0]}", {"why": decoded.problem}))
                elif decoded.entry is not None:
                    batch.append(decoded.entry)
        checks.feed_many(batch)
        if everything:
            present = self.tables(conn)
            for table, query in layout.orphan_queries():
                if table not in present:
                    continue
                top = self.max_rowid(conn, table)
                for start in range(0, top + 1, 20000):
                    try:
                        for (rowid,) in conn.execute(query, (start, start + 20000)):
                            findings.append(Finding("sqlite.orphan_rows", f"{table}:{rowid}", {"why": "its question does not exist"}))
                    except sqlite3.DatabaseError as exc:
                        if not is_damage(exc):
                            raise
        return {**checks.export(), "entries": entries, "damaged": damaged}

    def _run_scan(self, conn: sqlite3.Connection, layout: Layout, *, full: bool) -> tuple[list[Finding], dict, dict, dict[str, Any]]:
        """The file checks and the row scan; on a large cache, in parallel processes (the integrity check
        in one, the rows split by rowid between the others)."""
        rows_estimate = self.max_rowid(conn, layout.entry_table)
        parts = max(1, int(self.config.scan_processes))
        jobs: list[tuple] = [("file", 1 if full else 0)]
        if parts > 1 and rows_estimate >= self.config.parallel_min_entries and not isinstance(layout, GptCacheDb):
            first = self._first_rowid(conn, layout.entry_table) or 1
            step = (rows_estimate - first) // parts + 1
            jobs += [("rows", first + i * step, min(rows_estimate, first + (i + 1) * step - 1)) for i in range(parts)]
            results = run_parts(self._scan_part, jobs)
        else:
            jobs.append(("all_rows",))
            results = [self._scan_part(*job) for job in jobs]
        file_part, row_parts = results[0], results[1:]
        checks = EntryChecks(self.config.allowed_models)
        for part in row_parts:
            checks.absorb(part)
        checks.finish()
        findings = [Finding(code, subject, detail) for code, subject, detail in file_part["findings"]] + checks.findings
        damaged = [d for part in row_parts for d in part["damaged"]]
        row_stats = {"entries": sum(part["entries"] for part in row_parts), "damaged": damaged,
                     "poisoned_timestamps": sorted(checks.poisoned_timestamps)[:2000], "parts": len(row_parts)}
        return findings, file_part["metrics"], file_part["stats"], row_stats

    def _latency_ms(self, conn: sqlite3.Connection, layout: Layout) -> float | None:
        try:
            top = self.max_rowid(conn, layout.entry_table)
        except sqlite3.DatabaseError:
            return None
        if top <= 0:
            return None
        samples = []
        for _ in range(self.config.latency_sample_size):
            rowid = random.randint(1, top)
            started = time.perf_counter()
            try:
                conn.execute(f"SELECT * FROM {layout.entry_table} WHERE rowid >= ? LIMIT 1", (rowid,)).fetchone()
            except sqlite3.DatabaseError:
                continue
            samples.append((time.perf_counter() - started) * 1000)
        return sorted(samples)[len(samples) // 2] if samples else None

    # ------------------------------------------------------------------ protocol
    def check(self, *, now: float | None = None, incremental: bool = True) -> CheckOutcome:
        now = now or time.time()
        try:
            st = self.preflight()
            conn = self.connect()
        except Unreachable as exc:
            return CheckOutcome(reachable=False, findings=[Finding("target.unreachable", str(self.path), {"error": str(exc)})], error=str(exc))
        try:
            try:
                layout = self.layout(conn)
            except sqlite3.DatabaseError as exc:
                if is_damage(exc):  # the schema itself cannot be read: nothing but the file can be saved
                    return CheckOutcome(reachable=True, findings=[Finding("sqlite.integrity", DATABASE, {"messages": [str(exc)], "count": 1})],
                                        stats={"entries": 0}, error="")
                raise BackendError(f"cannot read {self.path}: {exc}") from exc
            state = self._state()
            every = float(self.config.opt("integrity_check_hours", 24.0)) * 3600
            full = self.config.full_speed or now - float(state.get("full_integrity_at", 0)) >= every
            try:
                findings, metrics, stats, row_stats = self._run_scan(conn, layout, full=full)
            except PartFailed as exc:
                raise BackendError(f"the scan of {self.path} failed: {exc}") from exc
            if row_stats["damaged"] and not any(f.code == "sqlite.integrity" for f in findings):
                findings.append(Finding("sqlite.integrity", DATABASE, {"messages": [f"unreadable rows: {d}" for d in row_stats["damaged"][:10]],
                                                                      "count": len(row_stats["damaged"])}))
            latency = self._latency_ms(conn, layout)
            if full:
                state["full_integrity_at"] = now
                self._save_state(state)
        except sqlite3.DatabaseError as exc:
            if is_damage(exc):
                return CheckOutcome(reachable=True, findings=[Finding("sqlite.integrity", DATABASE, {"messages": [str(exc)], "count": 1})],
                                    stats={"entries": 0})
            raise BackendError(f"cannot read {self.path}: {exc}") from exc
        finally:
            conn.close()
        metrics["entries"] = float(row_stats["entries"])
        if latency is not None:
            metrics["read_latency_ms"] = latency
        try:
            metrics["disk_free_bytes"] = float(shutil.disk_usage(self.path.parent).free)
        except OSError:
            pass
        stats.update({"layout": layout.name, "entries": row_stats["entries"], "files_read": 1, "damaged_ranges": row_stats["damaged"][:20]})
        evidence = {"poisoned_timestamps": row_stats["poisoned_timestamps"], "disk_free_bytes": metrics.get("disk_free_bytes"),
                    "file_mtime": st.st_mtime}
        return CheckOutcome(reachable=True, findings=findings, metrics=metrics, stats=stats, evidence=evidence)

    def recheck(self, subjects: list[str], *, now: float | None = None) -> list[Finding]:
        """The checks again, on these subjects only: rows are re-read and re-decoded; file subjects re-run
        the file checks (a full integrity_check)."""
        try:
            conn = self.connect()
        except Unreachable as exc:
            return [Finding("target.unreachable", str(self.path), {"error": str(exc)})]
        out: list[Finding] = []
        try:
            try:
                layout = self.layout(conn)
            except sqlite3.DatabaseError as exc:
                return [Finding("sqlite.integrity", DATABASE, {"messages": [str(exc)]})]
            file_level = [s for s in subjects if ":" not in s or s.startswith("index:")]
            if file_level:
                findings, _, _ = self._file_findings(conn, full=True)
                wanted = set(file_level)
                out.extend(f for f in findings if f.subject in wanted)
            checks = EntryChecks(self.config.allowed_models)
            for subject in subjects:
                table, sep, rowid = subject.partition(":")
                if not sep or table == "index" or not rowid.isdigit():
                    continue
                try:
                    out.extend(self._recheck_row(conn, layout, table, int(rowid), checks))
                except sqlite3.DatabaseError as exc:
                    if not is_damage(exc):
                        raise
                    out.append(Finding("sqlite.integrity", DATABASE, {"messages": [f"{subject}: {exc}"]}))
            out.extend(checks.findings)
        finally:
            conn.close()
        return out

    def _recheck_row(self, conn: sqlite3.Connection, layout: Layout, table: str, rowid: int, checks: EntryChecks) -> list[Finding]:
        if table not in self.tables(conn):
            return []
        if table == layout.entry_table:
            row = conn.execute(f"SELECT rowid, {layout.columns} FROM {table} WHERE rowid = ?", (rowid,)).fetchone()
            if row is None:
                return []
            decoded = layout.decode(row)
            if decoded.problem:
                return [Finding("sqlite.row_undecodable", f"{table}:{rowid}", {"why": decoded.problem})]
            if decoded.entry is not None:
                decoded.entry.dup_key = ""
                checks.feed(decoded.entry)
                if isinstance(layout, GptCacheDb):
                    for answer in conn.execute("SELECT rowid, question_id, answer, answer_type FROM gptcache_answer WHERE question_id = ?", (rowid,)):
                        sub = layout.decode_answer(answer, set())
                        if sub.entry is not None:
                            checks.feed(sub.entry)
            return []
        if isinstance(layout, GptCacheDb):
            if table == "gptcache_answer":
                row = conn.execute("SELECT rowid, question_id, answer, answer_type FROM gptcache_answer WHERE rowid = ?", (rowid,)).fetchone()
                if row is None:
                    return []
                decoded = layout.decode_answer(row, set())
                if decoded.problem:
                    return [Finding("sqlite.row_undecodable", f"{table}:{rowid}", {"why": decoded.problem})]
            for child, query in layout.orphan_queries():
                if child == table and conn.execute(query, (rowid - 1, rowid)).fetchone():
                    return [Finding("sqlite.orphan_rows", f"{table}:{rowid}", {"why": "its question does not exist"})]
        return []

    def fingerprint(self, subject: str) -> str:
        return self.fingerprints([subject])[subject]

    def fingerprints(self, subjects: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        conn = self.connect()
        try:
            for subject in subjects:
                table, sep, rowid = subject.partition(":")
                if sep and table != "index" and rowid.isdigit():
                    try:
                        row = self.row(conn, table, int(rowid))
                    except sqlite3.DatabaseError as exc:
                        out[subject] = f"unreadable:{exc}"
                        continue
                    out[subject] = row_digest(row) if row is not None else "absent"
                else:
                    # the application keeps writing: file-level repairs bind the file itself, not its bytes
                    out[subject] = f"file:{os.stat(self.path).st_ino}"
        finally:
            conn.close()
        return out
