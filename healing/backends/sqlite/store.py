"""Opening a SQLite cache the way a polite neighbour does, and reading every row that can be read.

Reads go in short keyset batches (each its own read transaction), so the application's writer waits at
most one batch; writes happen only in repairs, in short IMMEDIATE transactions with a busy timeout.
A damaged region is stepped over by bisecting the rowid range, so one bad page costs only its rows.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

from healing.backends.base import BackendError, TargetConfig
from healing.backends.sqlite.layouts import Layout, detect

BATCH = 2000
BUSY_TIMEOUT_MS = 2000
DAMAGE_ERRORS = ("malformed", "not a database", "corrupt", "disk i/o error", "database disk image")


def is_damage(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, sqlite3.DatabaseError) and any(word in text for word in DAMAGE_ERRORS)


class Unreachable(BackendError):
    """The file cannot be opened at all (missing, a directory, not permitted)."""


class SqliteStore:
    def __init__(self, config: TargetConfig) -> None:
        self.config = config
        self.path = Path(config.location)

    # ------------------------------------------------------------------ connections
    def preflight(self) -> os.stat_result:
        try:
            st = os.stat(self.path)
        except FileNotFoundError as exc:
            raise Unreachable(f"{self.path} does not exist") from exc
        except PermissionError as exc:
            raise Unreachable(f"{self.path}: permission denied") from exc
        if not stat.S_ISREG(st.st_mode):
            raise Unreachable(f"{self.path} is not a file")
        if not os.access(self.path, os.R_OK):
            raise Unreachable(f"{self.path}: permission denied (cannot read)")
        return st

    def connect(self, *, write: bool = False) -> sqlite3.Connection:
        self.preflight()
        uri = f"file:{self.path}?mode=rw"  # never creates a missing file
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
        except sqlite3.OperationalError as exc:
            raise Unreachable(f"cannot open {self.path}: {exc}") from exc
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if not write:
            conn.execute("PRAGMA query_only = 1")
        return conn

    def tables(self, conn: sqlite3.Connection) -> set[str]:
        return {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def layout(self, conn: sqlite3.Connection) -> Layout:
        return detect(self.tables(conn), str(self.path))

    def wal_path(self) -> Path:
        return Path(f"{self.path}-wal")

    def wal_bytes(self) -> int:
        try:
            return os.stat(self.wal_path()).st_size
        except FileNotFoundError:
            return 0

    # ------------------------------------------------------------------ reading rows
    def readable_rows(self, conn: sqlite3.Connection, table: str, columns: str, *, damaged: list[dict] | None = None,
                      batch: int = BATCH, thorough: bool = False, lo: int | None = None, hi: int | None = None) -> Iterator[tuple]:
        """Every row of `table` that can be read, as (rowid, *columns), in rowid order.

        Rows are read in rowid windows, each query seeking from the root of the b-tree, so a damaged
        leaf costs only its own rows (a plain scan can end silently at a bad page). A window that fails
        is bisected down to single rows; rows that still fail are reported in `damaged`. With `thorough`
        (recovery), a window that returns fewer rows than it spans is probed row by row as well.
        """
        select = f"SELECT rowid, {columns} FROM {table}"
        top = self.max_rowid(conn, table) if hi is None else hi
        if lo is None:
            lo = self._first_rowid(conn, table)
            if lo is None:
                return
        lo -= 1
        while lo < top:
            hi = min(lo + batch, top)
            try:
                rows = conn.execute(f"{select} WHERE rowid > ? AND rowid <= ? ORDER BY rowid", (lo, hi)).fetchall()
            except sqlite3.DatabaseError as exc:
                if not is_damage(exc):
                    raise
                rows = list(self._bisect(conn, select, table, lo + 1, hi, damaged))
            else:
                if thorough and len(rows) < hi - lo:
                    seen = {r[0] for r in rows}
                    rows.extend(self._probe(conn, select, table, [r for r in range(lo + 1, hi + 1) if r not in seen], damaged))
                    rows.sort(key=lambda r: r[0])
            yield from rows
            if not rows and not thorough:
                # a gap in the rowids: seek the next row from the root instead of stepping through it
                try:
                    nxt = conn.execute(f"SELECT min(rowid) FROM {table} WHERE rowid > ?", (hi,)).fetchone()[0]
                except sqlite3.DatabaseError:
                    nxt = None
                lo = (nxt - 1) if nxt is not None else hi
            else:
                lo = hi

    def _probe(self, conn: sqlite3.Connection, select: str, table: str, rowids: list[int], damaged: list[dict] | None) -> list[tuple]:
        out, bad = [], []
        for rowid in rowids:
            try:
                row = conn.execute(f"{select} WHERE rowid = ?", (rowid,)).fetchone()
            except sqlite3.DatabaseError as exc:
                if not is_damage(exc):
                    raise
                bad.append(rowid)
                continue
            if row is not None:
                out.append(row)
        if bad and damaged is not None:
            damaged.append({"table": table, "from": min(bad), "to": max(bad), "unreadable_rowids": len(bad)})
        return out

    def _first_rowid(self, conn: sqlite3.Connection, table: str) -> int | None:
        try:
            row = conn.execute(f"SELECT min(rowid) FROM {table}").fetchone()
            return row[0] if row and row[0] is not None else None
        except sqlite3.DatabaseError:
            return 1

    def _bisect(self, conn: sqlite3.Connection, select: str, table: str, lo: int, hi: int, damaged: list[dict] | None) -> Iterator[tuple]:
        stack = [(lo, hi)]
        bad: list[int] = []
        out: list[tuple] = []
        while stack:
            a, b = stack.pop()
            try:
                out.extend(conn.execute(f"{select} WHERE rowid >= ? AND rowid <= ? ORDER BY rowid", (a, b)).fetchall())
            except sqlite3.DatabaseError as exc:
                if not is_damage(exc):
                    raise
                if a == b:
                    bad.append(a)
                    continue
                mid = (a + b) // 2
                stack.append((mid + 1, b))
                stack.append((a, mid))
        if bad and damaged is not None:
            damaged.append({"table": table, "from": min(bad), "to": max(bad), "unreadable_rowids": len(bad)})
        out.sort(key=lambda r: r[0])
        yield from out

    def max_rowid(self, conn: sqlite3.Connection, table: str) -> int:
        try:
            row = conn.execute(f"SELECT max(rowid) FROM {table}").fetchone()
            return int(row[0] or 0)
        except sqlite3.DatabaseError:
            page_count = conn.execute("PRAGMA page_count").fetchone()[0]
            return int(page_count) * 256  # no row is smaller than a few bytes: an upper bound

    def row(self, conn: sqlite3.Connection, table: str, rowid: int) -> tuple | None:
        return conn.execute(f"SELECT * FROM {table} WHERE rowid = ?", (rowid,)).fetchone()

    def column_names(self, conn: sqlite3.Connection, table: str) -> list[str]:
        return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
