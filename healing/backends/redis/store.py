"""Talking to a Redis server gently: one client per check, short timeouts, SCAN in small pipelined
batches at a bounded rate (full speed only for on-demand checks). Never KEYS, never FLUSHDB."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import redis

from healing.backends.base import BackendError, TargetConfig

SERVER = "server"
CLIENT_NAME = "aicache-healing"  # how the product shows in CLIENT LIST and SLOWLOG


class Unreachable(BackendError):
    pass


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, redis.AuthenticationError):
        return "authentication failed: check the password in the target's URL"
    if isinstance(exc, redis.TimeoutError):
        return "the server did not answer in time"
    if isinstance(exc, redis.ConnectionError):
        return f"cannot connect: {exc}"
    if isinstance(exc, redis.exceptions.NoPermissionError):
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
                                      "health_check_interval": 0, "client_name": CLIENT_NAME}
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

    def _scan_pace(self) -> tuple[int, float | None]:
        """(SCAN COUNT, keys per second or None): scheduled checks keep under `scan_keys_per_second`;
        on-demand checks run at full speed."""
        full = self.config.full_speed
        count = int(self.config.opt("scan_batch", 1000 if full else 250))
        return count, None if full else float(self.config.opt("scan_keys_per_second", 2000))

    def scan_reading(self, commands_for: Callable[[list[bytes]], tuple[list[tuple], Any]]) -> Iterator[tuple[list[bytes], Any, list]]:
        """SCAN, and read each batch with the commands that `commands_for(keys)` returns along with a
        context of the caller's. Yields (keys, context, the commands' replies) per batch; a reply that is
        an error comes as the exception. A batch's reads go out in one write with the next SCAN, before
        the previous batch is handed over, so the server answers batch N+1 while the caller checks batch
        N: one round trip per batch, and neither side waits for the other."""
        count, rate = self._scan_pace()
        pool = self.client().connection_pool
        conn = pool.get_connection()
        clean = False
        try:
            conn.send_command("SCAN", 0, "COUNT", count)
            cursor, keys = conn.read_response()
            next_at, ready = time.monotonic(), None
            while True:
                reads, context = commands_for(keys)
                last = int(cursor) == 0
                conn.send_packed_command(conn.pack_commands(reads + ([] if last else [("SCAN", cursor, "COUNT", count)])))
                if ready is not None:
                    yield ready
                replies = []
                for _ in range(len(reads) + (0 if last else 1)):
                    try:
                        replies.append(conn.read_response())
                    except redis.ResponseError as exc:
                        replies.append(exc)
                if not last:
                    scanned = replies.pop()
                    if isinstance(scanned, Exception):
                        raise scanned
                ready = (keys, context, replies)
                if last:
                    yield ready
                    clean = True
                    return
                cursor, keys = scanned
                if rate:
                    # paced from the previous batch, not from the start: a scan that was held up (a slow
                    # server, a paused worker) goes on at its pace and never bursts to catch up
                    now = time.monotonic()
                    next_at = max(next_at + len(keys) / rate, now)
                    if next_at > now:
                        time.sleep(next_at - now)
        finally:
            if not clean:
                conn.disconnect()  # replies may still be on the wire: never hand this socket to anyone else
            pool.release(conn)
