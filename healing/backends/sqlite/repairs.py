"""Repairs of a SQLite LLM cache. Rows move to a quarantine database and come back under the same rowid;
whole-file operations keep what they need to undo themselves; every step is journalled first."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import msgpack

from healing.backends.aicache_fs.repairs import Journal
from healing.backends.base import ApplyResult, BackendError, PlanDraft
from healing.backends.fsutil import copy_exact, sha256_file
from healing.backends.sqlite.checks import DATABASE, Checks
from healing.backends.sqlite.layouts import row_digest
from healing.backends.sqlite.store import is_damage
from healing.catalog import REPAIRS, check_spec

WRITE_BATCH = 200


def _in_window(window: str, now: dt.datetime) -> bool:
    """'02:00-04:00' (UTC); a window may wrap midnight ('23:00-01:00')."""
    try:
        start_s, end_s = window.split("-")
        start = dt.time.fromisoformat(start_s.strip())
        end = dt.time.fromisoformat(end_s.strip())
    except ValueError as exc:
        raise BackendError(f"maintenance_window {window!r} is not HH:MM-HH:MM (UTC)") from exc
    t = now.time()
    return start <= t < end if start <= end else (t >= start or t < end)


def _quarantine_db(workdir: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(workdir / "quarantine.sqlite", isolation_level=None)
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS rows (src_table TEXT NOT NULL, src_rowid INTEGER NOT NULL, columns TEXT NOT NULL, "
                 "payload BLOB NOT NULL, sha256 TEXT NOT NULL, PRIMARY KEY (src_table, src_rowid))")
    return conn


class Repairs(Checks):
    def plan(self, code: str, subjects: list[str], *, now: float | None = None) -> PlanDraft:
        action = check_spec(code).repair_for(self.kind)
        if action is None:
            raise BackendError(f"{code} has no repair: it is for a person to act on")
        risk = REPAIRS[action].risk
        ops: list[dict[str, Any]] = []
        skipped: list[dict[str, Any]] = []
        blast_bytes = 0
        conn = self.connect()
        try:
            layout = self.layout(conn) if action != "recover_database" else None
            prints = self.fingerprints(subjects)
            if action == "quarantine_rows":
                by_table: dict[str, list[int]] = {}
                for subject in subjects:
                    table, _, rowid = subject.partition(":")
                    if prints[subject] == "absent":
                        skipped.append({"subject": subject, "reason": "already gone"})
                        continue
                    by_table.setdefault(table, []).append(int(rowid))
                seen: set[tuple[str, int]] = set()
                for table, rowids in by_table.items():
                    for rowid in rowids:
                        group = [pair for pair in layout.related(conn, table, [rowid]) if pair not in seen]
                        seen.update(group)
                        rows = []
                        for t, r in group:
                            row = self.row(conn, t, r)
                            if row is None:
                                continue
                            size = sum(len(v) if isinstance(v, str | bytes) else 8 for v in row)
                            blast_bytes += size
                            rows.append({"table": t, "rowid": r, "sha256": row_digest(row), "bytes": size})
                        if rows:
                            ops.append({"op": "quarantine_rows", "subject": f"{table}:{rowid}", "fingerprint": prints[f"{table}:{rowid}"], "rows": rows})
                blast_entries = sum(len(op["rows"]) for op in ops)
            else:
                page_size = conn.execute("PRAGMA page_size").fetchone()[0]
                page_count = conn.execute("PRAGMA page_count").fetchone()[0]
                size = page_size * page_count
                subject = subjects[0] if subjects else DATABASE
                op = {"op": action, "subject": subject, "fingerprint": prints.get(subject) or self.fingerprint(subject)}
                if action == "vacuum":
                    window = str(self.config.opt("maintenance_window", ""))
                    op["maintenance_window"] = window or None
                    op["free_pages"] = conn.execute("PRAGMA freelist_count").fetchone()[0]
                elif action == "set_wal_mode":
                    op["mode_from"] = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
                elif action == "wal_checkpoint":
                    op["wal_bytes"] = self.wal_bytes()
                ops.append(op)
                blast_bytes = size + self.wal_bytes()
                blast_entries = 1
        except sqlite3.DatabaseError as exc:
            raise BackendError(f"cannot plan on {self.path}: {exc}") from exc
        finally:
            conn.close()
        return PlanDraft(action=action, risk=risk, operations=ops, blast_entries=blast_entries, blast_bytes=blast_bytes,
                         summary=f"{REPAIRS[action].title}: {len(ops)} operation(s) on {self.path}", skipped=skipped)

    # ------------------------------------------------------------------ apply
    def apply(self, plan: dict[str, Any], workdir: Path) -> ApplyResult:
        workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        journal = Journal(workdir / "journal.jsonl")
        applied: list[dict[str, Any]] = []
        skipped: list[dict[str, Any]] = []
        ops = plan["operations"]
        current = self.fingerprints([op["subject"] for op in ops])
        for seq, op in enumerate(ops):
            subject = op["subject"]
            if current.get(subject) != op["fingerprint"]:
                skipped.append({"subject": subject, "reason": "changed since the plan was approved"})
                journal.write({"seq": seq, "phase": "skip", "op": op["op"], "subject": subject, "reason": "drifted"})
                continue
            handler = getattr(self, f"_apply_{op['op']}", None)
            if handler is None:
                raise BackendError(f"unknown operation {op['op']!r} in the plan")
            reason = handler(seq, op, workdir, journal)
            if reason is None:
                applied.append({"subject": subject, "op": op["op"]})
            else:
                skipped.append({"subject": subject, "reason": reason})
        journal.write({"phase": "complete", "applied": len(applied), "skipped": len(skipped)})
        manifest = {"store": str(self.path), "kind": self.kind, "written_at": time.time(), "items": journal.read()}
        (workdir / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
        return ApplyResult(applied=applied, skipped=skipped)

    def _apply_quarantine_rows(self, seq: int, op: dict, workdir: Path, journal: Journal) -> str | None:
        conn = self.connect(write=True)
        q = _quarantine_db(workdir)
        try:
            layout_tables = self.tables(conn)
            rows = [r for r in op["rows"] if r["table"] in layout_tables]
            # 1. copy every row into the quarantine, durably, before anything is deleted
            kept: list[dict] = []
            for item in rows:
                row = self.row(conn, item["table"], item["rowid"])
                if row is None or row_digest(row) != item["sha256"]:
                    continue
                columns = self.column_names(conn, item["table"])
                payload = msgpack.packb(list(row), use_bin_type=True)
                q.execute("INSERT OR REPLACE INTO rows VALUES (?, ?, ?, ?, ?)", (item["table"], item["rowid"], json.dumps(columns), payload, item["sha256"]))
                kept.append(item)
            if not kept:
                return "the rows changed or went away since planning"
            journal.write({"seq": seq, "phase": "intent", "op": "quarantine_rows", "subject": op["subject"],
                           "rows": [{"table": i["table"], "rowid": i["rowid"], "sha256": i["sha256"]} for i in kept]})
            # 2. delete in short write transactions, each row only if it is still what was copied
            deleted = []
            for start in range(0, len(kept), WRITE_BATCH):
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for item in kept[start:start + WRITE_BATCH]:
                        row = self.row(conn, item["table"], item["rowid"])
                        if row is not None and row_digest(row) == item["sha256"]:
                            conn.execute(f"DELETE FROM {item['table']} WHERE rowid = ?", (item["rowid"],))
                            deleted.append(item)
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            journal.write({"seq": seq, "phase": "done", "op": "quarantine_rows", "subject": op["subject"],
                           "deleted": [{"table": i["table"], "rowid": i["rowid"]} for i in deleted]})
            return None if deleted else "the rows changed while being quarantined"
        finally:
            q.close()
            conn.close()

    def _apply_reindex(self, seq: int, op: dict, workdir: Path, journal: Journal) -> str | None:
        name = op["subject"].partition(":")[2] if op["subject"].startswith("index:") else ""

        def statement(conn: sqlite3.Connection) -> str:
            names = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
            return f'REINDEX "{name}"' if name in names else "REINDEX"

        return self._rewrite_with_copy(seq, op, workdir, journal, statement)

    def _rewrite_with_copy(self, seq: int, op: dict, workdir: Path, journal: Journal, statement) -> str | None:
        """REINDEX and VACUUM: take a consistent copy (SQLite's backup API) first, journal the content
        digest before and after, so that a rollback can put the copy back only if nobody wrote since."""
        conn = self.connect(write=True)
        try:
            backup = sqlite3.connect(workdir / "before.sqlite")
            conn.backup(backup)
            backup.close()
            journal.write({"seq": seq, "phase": "intent", "op": op["op"], "subject": op["subject"], "backup": "before.sqlite",
                           "content_sha256": self._content_digest(conn)})
            conn.execute(statement(conn))
            journal.write({"seq": seq, "phase": "done", "op": op["op"], "subject": op["subject"], "content_sha256_after": self._content_digest(conn)})
        finally:
            conn.close()
        return None

    def _apply_wal_checkpoint(self, seq: int, op: dict, workdir: Path, journal: Journal) -> str | None:
        journal.write({"seq": seq, "phase": "intent", "op": "wal_checkpoint", "subject": op["subject"], "wal_bytes": self.wal_bytes()})
        conn = self.connect(write=True)
        try:
            busy, log_frames, done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            conn.close()
        journal.write({"seq": seq, "phase": "done", "op": "wal_checkpoint", "subject": op["subject"], "busy": busy, "frames": log_frames,
                       "checkpointed": done, "wal_bytes_after": self.wal_bytes()})
        return "a reader kept the checkpoint from finishing; it will be retried" if busy else None

    def _content_digest(self, conn: sqlite3.Connection) -> str:
        import hashlib

        digest = hashlib.sha256()
        for line in conn.iterdump():
            digest.update(line.encode())
        return digest.hexdigest()

    def _apply_vacuum(self, seq: int, op: dict, workdir: Path, journal: Journal) -> str | None:
        window = op.get("maintenance_window")
        if not window:
            return "VACUUM needs a maintenance window: set the target option maintenance_window (e.g. 02:00-04:00, UTC)"
        if not _in_window(window, dt.datetime.now(dt.UTC)):
            return f"outside the maintenance window {window} UTC; the next pass inside it re-plans"
        return self._rewrite_with_copy(seq, op, workdir, journal, lambda conn: "VACUUM")

    def _apply_set_wal_mode(self, seq: int, op: dict, workdir: Path, journal: Journal) -> str | None:
        conn = self.connect(write=True)
        try:
            before = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
            journal.write({"seq": seq, "phase": "intent", "op": "set_wal_mode", "subject": op["subject"], "mode_from": before})
            after = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
        finally:
            conn.close()
        if after != "wal":
            return f"SQLite kept journal mode {after!r} (another connection holds the database)"
        journal.write({"seq": seq, "phase": "done", "op": "set_wal_mode", "subject": op["subject"], "mode_to": after})
        return None

    def _apply_recover_database(self, seq: int, op: dict, workdir: Path, journal: Journal) -> str | None:
        """Copy every readable row into a new file, check it, keep the damaged file, swap the new one in."""
        files = workdir / "files"
        files.mkdir(parents=True, exist_ok=True)
        originals = {}
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{self.path}{suffix}")
            if src.exists():
                (files / src.name).unlink(missing_ok=True)  # a previous attempt copied but did not finish
                originals[suffix or "db"] = {"name": src.name, "sha256": copy_exact(src, files / src.name), "mode": os.stat(src).st_mode & 0o777}
        journal.write({"seq": seq, "phase": "intent", "op": "recover_database", "subject": op["subject"], "originals": originals})
        new_path = Path(f"{self.path}.healing-recovered")
        new_path.unlink(missing_ok=True)
        copied, damaged = self._recover_into(new_path)
        out = sqlite3.connect(new_path)
        try:
            verdict = [r[0] for r in out.execute("PRAGMA integrity_check")]
        finally:
            out.close()
        if verdict != ["ok"]:
            new_path.unlink(missing_ok=True)
            raise BackendError(f"the recovered file does not pass integrity_check: {verdict[:3]}")
        shutil.copy2(new_path, workdir / "recovered.sqlite")
        os.chmod(new_path, originals["db"]["mode"])
        for suffix in ("-wal", "-shm"):  # the old WAL belongs to the damaged file: it must not be replayed into the new one
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        os.replace(new_path, self.path)
        journal.write({"seq": seq, "phase": "done", "op": "recover_database", "subject": op["subject"], "rows_copied": copied,
                       "unreadable": damaged[:50], "sha256_after": sha256_file(self.path)})
        return None

    def _recover_into(self, new_path: Path) -> tuple[dict[str, int], list[dict]]:
        src = self.connect()
        dst = sqlite3.connect(new_path, isolation_level=None)
        copied: dict[str, int] = {}
        damaged: list[dict] = []
        try:
            schema = src.execute("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL").fetchall()
            tables = [(name, sql) for kind, name, _, sql in schema if kind == "table" and not name.startswith("sqlite_")]
            for _, sql in tables:
                dst.execute(sql)
            for name, _ in tables:
                columns = self.column_names(src, name)
                cols = ", ".join(f'"{c}"' for c in columns)
                marks = ", ".join("?" * (len(columns) + 1))
                dst.execute("BEGIN")
                count = 0
                for row in self.readable_rows(src, name, cols, damaged=damaged, thorough=True):
                    dst.execute(f'INSERT INTO "{name}" (rowid, {cols}) VALUES ({marks})', row)
                    count += 1
                dst.execute("COMMIT")
                copied[name] = count
            for kind, name, _, sql in schema:
                if kind in ("index", "trigger", "view") and not name.startswith("sqlite_"):
                    try:
                        dst.execute(sql)
                    except sqlite3.IntegrityError as exc:  # a unique index that the damage made inconsistent
                        damaged.append({"index": name, "error": str(exc)})
        except sqlite3.DatabaseError as exc:
            if is_damage(exc):
                raise BackendError(f"the schema of {self.path} cannot be read ({exc}); recovery needs a person") from exc
            raise
        finally:
            src.close()
            dst.close()
        return copied, damaged

    # ------------------------------------------------------------------ rollback
    def rollback(self, workdir: Path) -> dict[str, Any]:
        journal = Journal(workdir / "journal.jsonl")
        records = journal.read()
        restored: list[str] = []
        superseded: list[dict[str, str]] = []
        done = {(r.get("seq"), r.get("op")): r for r in records if r.get("phase") == "done"}
        for intent in reversed([r for r in records if r.get("phase") == "intent"]):
            op = intent["op"]
            if op == "quarantine_rows":
                self._rollback_rows(intent, workdir, restored, superseded)
            elif op == "set_wal_mode":
                conn = self.connect(write=True)
                try:
                    conn.execute(f"PRAGMA journal_mode = {intent['mode_from']}")
                finally:
                    conn.close()
                restored.append(intent["subject"])
            elif op in ("vacuum", "reindex"):
                self._rollback_copy(intent, done.get((intent["seq"], op)), workdir, restored, superseded)
            elif op == "recover_database":
                self._rollback_recover(intent, done.get((intent["seq"], "recover_database")), workdir, restored, superseded)
            # wal_checkpoint changes no data: there is nothing to restore
        journal.write({"phase": "rolled_back", "restored": len(restored), "superseded": len(superseded)})
        return {"restored": restored, "superseded": superseded}

    def _rollback_rows(self, intent: dict, workdir: Path, restored: list, superseded: list) -> None:
        qpath = workdir / "quarantine.sqlite"
        if not qpath.exists():
            return
        q = sqlite3.connect(qpath)
        conn = self.connect(write=True)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for item in intent["rows"]:
                    got = q.execute("SELECT columns, payload, sha256 FROM rows WHERE src_table = ? AND src_rowid = ?", (item["table"], item["rowid"])).fetchone()
                    if got is None:
                        continue
                    columns, values = json.loads(got[0]), msgpack.unpackb(got[1], raw=False)
                    present = self.row(conn, item["table"], item["rowid"])
                    if present is not None:
                        if row_digest(present) != got[2]:
                            superseded.append({"subject": f"{item['table']}:{item['rowid']}", "reason": "the application wrote a new row under this rowid"})
                        continue
                    cols = ", ".join(f'"{c}"' for c in columns)
                    marks = ", ".join("?" * (len(columns) + 1))
                    try:
                        conn.execute(f'INSERT INTO "{item["table"]}" (rowid, {cols}) VALUES ({marks})', [item["rowid"], *values])
                    except sqlite3.IntegrityError:
                        superseded.append({"subject": f"{item['table']}:{item['rowid']}", "reason": "the application cached this prompt again meanwhile"})
                        continue
                    restored.append(f"{item['table']}:{item['rowid']}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()
            q.close()

    def _rollback_copy(self, intent: dict, done: dict | None, workdir: Path, restored: list, superseded: list) -> None:
        if done is None:
            return  # REINDEX and VACUUM are one transaction each: it happened or not, and no row changed
        conn = self.connect(write=True)
        try:
            if self._content_digest(conn) != done.get("content_sha256_after"):
                superseded.append({"subject": intent["subject"], "reason": f"the application wrote since the {intent['op'].upper()}; the copy stays in the quarantine"})
                return
            backup = sqlite3.connect(workdir / intent["backup"])
            backup.backup(conn)
            backup.close()
        finally:
            conn.close()
        restored.append(intent["subject"])

    def _rollback_recover(self, intent: dict, done: dict | None, workdir: Path, restored: list, superseded: list) -> None:
        if done is None:
            Path(f"{self.path}.healing-recovered").unlink(missing_ok=True)
            return  # the swap never happened: the damaged file is still in place
        if sha256_file(self.path) != done.get("sha256_after"):
            superseded.append({"subject": intent["subject"], "reason": "the application wrote to the recovered file; the damaged copy stays in the quarantine"})
            return
        files = workdir / "files"
        for suffix, item in intent["originals"].items():
            dest = self.path if suffix == "db" else Path(f"{self.path}{suffix}")
            tmp = Path(f"{dest}.healing-restore")
            tmp.unlink(missing_ok=True)
            copy_exact(files / item["name"], tmp)
            os.chmod(tmp, item["mode"])
            os.replace(tmp, dest)
        restored.append(intent["subject"])
