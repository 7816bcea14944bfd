"""Run independent parts of one job in forked processes (os.fork, not multiprocessing: Celery's pool
processes may not start multiprocessing children). Used by the file-store scan and chain verification."""

from __future__ import annotations

import gc
import marshal
import os
from collections.abc import Callable
from typing import Any


class PartFailed(Exception):
    """A forked part raised; the message is its exception."""


def run_parts(fn: Callable[..., Any], jobs: list[tuple], *, before_child: Callable[[], None] | None = None) -> list[Any]:
    """`fn(*job)` for each job, each in a forked child (a single job runs here). Results (plain data)
    come back marshalled through a pipe, in job order. A failing part raises PartFailed. The parent only
    waits: the parts' large working sets end with their processes instead of being freed object by
    object here."""
    if len(jobs) <= 1:
        return [fn(*job) for job in jobs]
    children = []
    for job in jobs:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            # a short-lived child that ends with os._exit: the cycle collector would only walk, again and
            # again, the heap it inherited while the part builds its hundreds of thousands of tuples
            gc.disable()
            os.close(read_end)
            try:
                if before_child:
                    before_child()
                payload = marshal.dumps(("ok", fn(*job)))
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                payload = marshal.dumps(("error", f"{exc.__class__.__name__}: {exc}"))
            view = memoryview(payload)
            while view:
                view = view[os.write(write_end, view):]
            os._exit(0)
        os.close(write_end)
        children.append((pid, read_end))
    results: list[Any] = []
    failure: BaseException | None = None
    for pid, read_end in children:
        chunks = []
        while chunk := os.read(read_end, 1 << 20):
            chunks.append(chunk)
        os.close(read_end)
        os.waitpid(pid, 0)
        try:
            status, payload = marshal.loads(b"".join(chunks))
        except (EOFError, ValueError, TypeError):
            status, payload = "error", "the process died"
        if status != "ok":
            failure = failure or PartFailed(payload)
        else:
            results.append(payload)
    if failure is not None:
        raise failure
    return results
