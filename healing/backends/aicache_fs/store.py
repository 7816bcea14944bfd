"""Reading the store: reachability, the per-target scan state, entries, the index, fingerprints."""

from __future__ import annotations

import json
import marshal
import os
import shutil
import stat
import time
from pathlib import Path
from typing import Any

import orjson

from healing.backends.aicache_fs.format import (
    ENTRY_RE,
    INDEX_NAME,
    STATE_VERSION,
    STORE,
    _is_num,
    analyze_entry_bytes,
)
from healing.backends.base import (
    TargetConfig,
)
from healing.backends.fsutil import (
    file_fingerprint,
    read_bytes,
    sha256_bytes,
)


class StoreAccess:
    kind = "aicache_fs"

    def __init__(self, config: TargetConfig) -> None:
        self.config = config
        self.root = Path(config.location).expanduser()

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
            return index, None, st
        return None, problem, st

    # ------------------------------------------------------------------ check

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


    def _entry_object(self, key: str) -> dict | None:
        try:
            obj = orjson.loads(read_bytes(self.root / f"{key}.json"))
        except (OSError, orjson.JSONDecodeError):
            return None
        return obj if isinstance(obj, dict) and isinstance(obj.get("value"), str) and _is_num(obj.get("timestamp")) else None
