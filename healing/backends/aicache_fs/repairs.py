"""Repairs: dry-run plans, journalled application that never clobbers a client's write, byte-exact
rollback from the journal."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import orjson

from healing.backends.aicache_fs.format import (
    INDEX_NAME,
    S_LAST,
    S_TS,
    STORE,
    _is_num,
    index_record_for,
)
from healing.backends.aicache_fs.store import StoreAccess
from healing.backends.base import (
    ApplyResult,
    BackendError,
    PlanDraft,
)
from healing.backends.fsutil import (
    atomic_write,
    copy_exact,
    create_exclusive,
    file_fingerprint,
    read_bytes,
    recover_set_aside,
    sha256_bytes,
    sha256_file,
    swap_in,
    take_out,
)
from healing.catalog import REPAIRS, check_spec


class Repairs(StoreAccess):
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
        # a step killed half-way may have left its subject renamed aside: first put it back where it was
        names = {INDEX_NAME if r["op"].startswith("index_") else r.get("subject") for r in intents} - {None, STORE}
        recovered = recover_set_aside(self.root, names, workdir / "client-writes")
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
        journal.write({"phase": "rolled_back", "restored": len(restored), "superseded": len(superseded), "set_aside": recovered})
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
