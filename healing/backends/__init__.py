"""Backends by kind."""

from __future__ import annotations

from healing.backends.base import Backend, BackendError, TargetConfig


def backend_for(config: TargetConfig) -> Backend:
    if config.kind == "aicache_fs":
        from healing.backends.aicache_fs import AicacheFsBackend

        return AicacheFsBackend(config)
    raise BackendError(f"no backend for kind {config.kind!r} yet")


__all__ = ["Backend", "BackendError", "TargetConfig", "backend_for"]
