"""Backends by kind."""

from __future__ import annotations

from healing.backends.base import Backend, BackendError, TargetConfig


def backend_for(config: TargetConfig) -> Backend:
    if config.kind == "aicache_fs":
        from healing.backends.aicache_fs import AicacheFsBackend

        return AicacheFsBackend(config)
    if config.kind == "sqlite":
        from healing.backends.sqlite import SqliteBackend

        return SqliteBackend(config)
    if config.kind == "redis":
        from healing.backends.redis import RedisBackend

        return RedisBackend(config)
    raise BackendError(f"no backend for kind {config.kind!r} yet")


__all__ = ["Backend", "BackendError", "TargetConfig", "backend_for"]
