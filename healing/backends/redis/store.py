"""Talking to a Redis server gently: one client per check, short timeouts, SCAN in small pipelined
batches at a bounded rate (full speed only for on-demand checks). Never KEYS, never FLUSHDB."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import redis

from healing.backends.base import BackendError, TargetConfig

SERVER = "server"


class Unreachable(BackendError):
    pass


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, redis.AuthenticationError):
        return "authentication failed: check the password in the target's URL"
    if isinstance(exc, redis.TimeoutError):
        return "the server did not answer in time"
    if isinstance(exc, redis.ConnectionError):
        return f"cannot connect: {exc}"
    if isinstance(exc, redis.ResponseError) and "NOPERM" in str(exc):
        return f"the user lacks a permission: {exc}"
    return f"{exc.__class__.__name__}: {exc}"


class RedisStore:
    def __init__(self, config: TargetConfig) -> None:
        self.config = config
        self._client: redis.Redis | None = None

    @property
    def shown_location(self) -> str:
        parts = urlsplit(self.config.location)
        host = parts.hostname or parts.path
        return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path if parts.scheme != 'unix' else ''}"

    def client(self) -> redis.Redis:
        if self._client is None:
            timeout = float(self.config.opt("socket_timeout", 5.0))
            kwargs: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout, "decode_responses": False,
                                      "health_check_interval": 0}
            db = self.config.opt("db", None)
            if db is not None:
                kwargs["db"] = int(db)
            try:
                self._client = redis.Redis.from_url(self.config.location, **kwargs)
            except ValueError as exc:
                raise Unreachable(f"not a usable Redis URL: {exc}") from exc
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def ping(self) -> None:
        try:
            self.client().ping()
        except redis.RedisError as exc:
            raise Unreachable(f"{self.shown_location}: {describe_error(exc)}") from exc

    # ------------------------------------------------------------------ keys
    def prefixes(self) -> tuple[list[bytes], list[bytes]]:
        redisvl = [p.encode() for p in self.config.opt("redisvl_prefixes", ["llmcache:"])]
        generic = [p.encode() for p in self.config.opt("prefixes", [])]
        return redisvl, generic

    def scan_batches(self) -> Iterator[list[bytes]]:
        """SCAN the keyspace in small batches. Scheduled checks keep under `scan_keys_per_second`;
        on-demand checks run at full speed."""
        full = self.config.full_speed
        count = int(self.config.opt("scan_batch", 1000 if full else 250))
        rate = None if full else float(self.config.opt("scan_keys_per_second", 5000))
        cursor = 0
        client = self.client()
        started = time.monotonic()
        seen = 0
        while True:
            cursor, keys = client.scan(cursor=cursor, count=count)
            if keys:
                seen += len(keys)
                yield keys
            if cursor == 0:
                return
            if rate:
                ahead = seen / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
