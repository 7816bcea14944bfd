"""File helpers for repairs that must never lose data: atomic writes, fingerprints, byte-exact copies."""

from __future__ import annotations

import hashlib
import os
import re
import stat
import time
from pathlib import Path


def sha256_file(path: Path | str, *, dir_fd: int | None = None) -> str:
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
    try:
        while chunk := os.read(fd, 1 << 20):
            digest.update(chunk)
    finally:
        os.close(fd)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_fingerprint(path: Path) -> str:
    """size, mtime, mode and content hash: anything a client could change shows."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "absent"
    if not stat.S_ISREG(st.st_mode):
        return f"type:{stat.S_IFMT(st.st_mode):o}:{st.st_mtime_ns}"
    try:
        digest = sha256_file(path)
    except OSError as exc:
        digest = f"unreadable:{exc.errno}"
    return f"{st.st_size}:{st.st_mtime_ns}:{stat.S_IMODE(st.st_mode):o}:{digest}"


def read_bytes(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def write_temp_beside(path: Path, data: bytes, *, tag: str, mode: int | None = None, times_ns: tuple[int, int] | None = None) -> Path:
    """Write `data` to a fsynced temp file next to `path` (same file system, so it can be renamed or
    linked into place), with the given mode and times. The caller moves or removes it."""
    tmp = path.with_name(f".{path.name}.healing-{tag}-{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        if mode is not None:
            os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    if times_ns is not None:
        os.utime(tmp, ns=times_ns)
    return tmp


def atomic_write(path: Path, data: bytes, *, mode: int | None = None, times_ns: tuple[int, int] | None = None) -> str:
    """Write `data` to a temp file beside `path`, fsync, then rename over it. Returns the sha256."""
    tmp = write_temp_beside(path, data, tag="w", mode=mode, times_ns=times_ns)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return sha256_bytes(data)


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def copy_exact(src: Path, dst: Path) -> str:
    """Copy bytes, mode and times; fsync; return the sha256 of what was copied."""
    data = read_bytes(src)
    st = os.lstat(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
    return sha256_bytes(data)


def take_out(path: Path, expected_sha: str, keep_dir: Path) -> str | None:
    """Remove `path` only if it still holds exactly the bytes that were copied to the quarantine.

    The file is first renamed aside, so that a client opening the path from now on creates a new
    file instead of writing into the one being removed; aicache opens with O_TRUNC, so a client that
    opened it just before the rename has already changed its bytes and the comparison sees it.
    Returns None when removed, or the reason it was left (nothing the client wrote is ever deleted).
    """
    moving = path.with_name(f".{path.name}.healing-q-{os.getpid()}")
    try:
        os.rename(path, moving)
    except FileNotFoundError:
        return "already gone"
    try:
        same = sha256_file(moving) == expected_sha
    except OSError:
        same = False
    if same:
        moving.unlink()
        fsync_dir(path.parent)
        return None
    _put_back(moving, path, keep_dir)
    return "written by the client during the repair"


# what take_out and swap_in set aside (".NAME.healing-q-PID", ".NAME.healing-m-PID") and what
# write_temp_beside writes (".NAME.healing-TAG-PID.tmp")
_SET_ASIDE = re.compile(r"^\.(?P<name>.+)\.healing-[a-z]-\d+(?P<tmp>\.tmp)?$")


def recover_set_aside(root: Path, names: set[str], keep_dir: Path) -> dict[str, list[str]]:
    """After a crash: put back what a repair had set aside for the files `names` in `root`.

    A file set aside holds exactly what the path held when the step began, so it goes back to the path
    (or, when something newer is there now, beside the quarantine: never deleted). Temp files hold only
    bytes the repair wrote and are removed. Returns what was put back, kept and removed."""
    out: dict[str, list[str]] = {"put_back": [], "kept": [], "removed": []}
    try:
        listing = os.listdir(root)
    except OSError:
        return out
    for leftover in listing:
        match = _SET_ASIDE.match(leftover)
        if not match or match["name"] not in names:
            continue
        path, aside = root / match["name"], root / leftover
        if match["tmp"]:
            aside.unlink(missing_ok=True)
            out["removed"].append(leftover)
            continue
        newer = os.path.lexists(path)
        _put_back(aside, path, keep_dir)
        out["kept" if newer else "put_back"].append(leftover if newer else match["name"])
    if any(out.values()):
        fsync_dir(root)
    return out


def _put_back(moving: Path, path: Path, keep_dir: Path) -> None:
    """The client wrote a file that was set aside: put its bytes back (never over a newer client
    write), or, when the client has already written anew, keep them beside the quarantine."""
    try:
        os.link(moving, path)
        moving.unlink()
    except FileExistsError:
        keep_dir.mkdir(parents=True, exist_ok=True)
        os.replace(moving, keep_dir / f"{path.name}.client-write-{time.time_ns()}")
    fsync_dir(path.parent)


def swap_in(path: Path, new_bytes: bytes, original: bytes, *, mode: int, keep_dir: Path, times_ns: tuple[int, int] | None = None) -> str | None:
    """Replace `path` with `new_bytes` only if it still holds `original`; never clobber a client write.

    Returns None on success, or why the file was left as the client has it.
    """
    tmp = write_temp_beside(path, new_bytes, tag="s", mode=mode, times_ns=times_ns)
    moving = path.with_name(f".{path.name}.healing-m-{os.getpid()}")
    try:
        os.rename(path, moving)
    except FileNotFoundError:
        tmp.unlink()
        return "the client removed the file"
    if read_bytes(moving) != original:
        tmp.unlink()
        _put_back(moving, path, keep_dir)
        return "written by the client during the repair"
    try:
        os.link(tmp, path)
    except FileExistsError:
        # the client created a new file at the path while it was aside: its write wins
        tmp.unlink()
        moving.unlink()
        return "written by the client during the repair"
    tmp.unlink()
    moving.unlink()
    fsync_dir(path.parent)
    return None


def create_exclusive(path: Path, data: bytes, *, mode: int, times_ns: tuple[int, int] | None = None) -> bool:
    """Create `path` with `data` only if nothing is there (no clobbering); False if something is."""
    tmp = write_temp_beside(path, data, tag="r", mode=mode, times_ns=times_ns)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink()
        fsync_dir(path.parent)
