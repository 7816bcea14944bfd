"""Checks of a Redis LLM cache: the server (INFO, timed PINGs, SLOWLOG, LATENCY) and every cache key
(TTL, size, how its client decodes it, and the AI checks on what it says)."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import msgpack
import redis

from healing.backends.base import BackendError, CheckOutcome, Finding
from healing.backends.entries import EntryChecks
from healing.backends.redis.layouts import GENERIC, LANGCHAIN, classify, decode_langchain, decode_redisvl, key_of, subject_of
from healing.backends.redis.store import CLIENT_NAME, SERVER, RedisStore, Unreachable, describe_error

# A key's content, as a string that does not depend on how the server happens to lay it out: a hash's
# fields sorted, length-prefixed (a DUMP of a hash table changes with rehashing); other types their DUMP.
DIGEST_LUA = (
    "local t = redis.call('TYPE', KEYS[1])['ok'] local d = false "
    "if t == 'hash' then local f = redis.call('HGETALL', KEYS[1]) local p = {} "
    "for i = 1, #f, 2 do p[#p + 1] = string.len(f[i]) .. ':' .. f[i] .. string.len(f[i + 1]) .. ':' .. f[i + 1] end "
    "table.sort(p) d = 'hash\\1' .. table.concat(p, '\\1') "
    "elseif t ~= 'none' then d = t .. '\\1' .. redis.call('DUMP', KEYS[1]) end"
)
_FINGERPRINT_LUA = DIGEST_LUA + " if d then return {redis.sha1hex(d), redis.call('PTTL', KEYS[1])} end return false"


# A batch's keys read by one server-side script per slice, answered as one MessagePack blob (Redis' own
# cmsgpack): parsing one bulk string in C instead of a nested reply element by element is what keeps a
# full check near the SCAN + TTL floor. ARGV[1] holds one letter per key: 'h' a layout key, 'g' a generic
# one. Per key, flat: PTTL, then the HGETALL of a hash (layout keys; the error text when the key is not a
# hash) or MEMORY USAGE (generic keys), or false when the key is gone.
# Slices are small enough that one script never holds the server for more than a millisecond or two.
SCRIPT_SLICE = 100
_READ_BATCH_LUA = """
local out, n, flags = {}, 0, ARGV[1]
for i, key in ipairs(KEYS) do
  local pttl = redis.call('PTTL', key)
  local body = false
  if pttl ~= -2 then
    if string.byte(flags, i) == 103 then  -- 'g'
      body = redis.call('MEMORY', 'USAGE', key, 'SAMPLES', '0') or 0
    else
      local reply = redis.pcall('HGETALL', key)
      body = reply['err'] or reply
    end
  end
  out[n + 1], out[n + 2], n = pttl, body, n + 2
end
return cmsgpack.pack(out)
"""


class Checks(RedisStore):
    # ------------------------------------------------------------------ state between runs
    def _state(self) -> dict[str, Any]:
        path = self.config.state_path
        try:
            return json.loads(path.read_text()) if path else {}
        except (OSError, ValueError):
            return {}

    def _save_state(self, state: dict[str, Any]) -> None:
        path = self.config.state_path
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, path)

    def describe(self) -> dict[str, Any]:
        try:
            info = self.client().info("server")
            return {"kind": self.kind, "location": self.shown_location, "version": info.get("redis_version")}
        except redis.RedisError as exc:
            return {"kind": self.kind, "location": self.shown_location, "error": describe_error(exc)}
        finally:
            self.close()

    # ------------------------------------------------------------------ server
    def _ping_ms(self, samples: int) -> list[float]:
        client = self.client()
        out = []
        for _ in range(samples):
            started = time.perf_counter()
            client.ping()
            out.append((time.perf_counter() - started) * 1000)
        return sorted(out)

    def _server_findings(self, info: dict, state: dict, *, with_ttl: int, cache_keys: int, update_state: bool) -> tuple[list[Finding], dict[str, float]]:
        opt = self.config.opt
        client = self.client()
        findings: list[Finding] = []
        used, maxmemory = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
        policy = str(info.get("maxmemory_policy", "noeviction"))
        metrics: dict[str, float] = {"bytes": float(used)}
        if maxmemory and used >= float(opt("memory_pressure_share", 0.9)) * maxmemory:
            findings.append(Finding("redis.memory_pressure", SERVER, {"used_memory": used, "maxmemory": maxmemory, "share": round(used / maxmemory, 3)}))
        if maxmemory and policy == "noeviction":
            findings.append(Finding("redis.eviction_policy", SERVER, {"maxmemory_policy": policy, "why": "writes fail once the cache is full"}))
        elif maxmemory and policy.startswith("volatile-") and cache_keys and with_ttl / cache_keys < 0.5:
            findings.append(Finding("redis.eviction_policy", SERVER, {"maxmemory_policy": policy, "keys_with_ttl_share": round(with_ttl / cache_keys, 3),
                                                                     "why": "most cache keys have no TTL, so a volatile policy can evict almost nothing"}))
        evicted, hits, misses = int(info.get("evicted_keys", 0)), int(info.get("keyspace_hits", 0)), int(info.get("keyspace_misses", 0))
        run_id = info.get("run_id")
        same_server = state.get("run_id") == run_id
        if same_server and "evicted_keys" in state:
            delta = evicted - int(state["evicted_keys"])
            metrics["evictions"] = float(max(0, delta))
            if delta > int(opt("evictions_max", 0)):
                findings.append(Finding("redis.evictions", SERVER, {"evicted_since_last_check": delta}))
        if same_server and "keyspace_hits" in state:
            dh, dm = hits - int(state["keyspace_hits"]), misses - int(state["keyspace_misses"])
            if dh + dm > 0:
                ratio = dh / (dh + dm)
                metrics["hit_ratio"] = ratio
                if dh + dm >= int(opt("hit_ratio_min_lookups", 1000)) and ratio < float(opt("hit_ratio_min", 0.2)):
                    findings.append(Finding("redis.hit_ratio", SERVER, {"hit_ratio": round(ratio, 4), "lookups": dh + dm}))
        frag = float(info.get("mem_fragmentation_ratio", 1.0))
        waste = int(info.get("used_memory_rss", 0)) - used
        metrics["fragmentation_ratio"] = frag
        if frag >= float(opt("fragmentation_ratio", 1.5)) and waste >= int(opt("fragmentation_min_waste_bytes", 64 << 20)):
            findings.append(Finding("redis.fragmentation", SERVER, {"mem_fragmentation_ratio": frag, "wasted_bytes": waste}))
        bad = {}
        if str(info.get("rdb_last_bgsave_status", "ok")) != "ok":
            bad["rdb_last_bgsave_status"] = info.get("rdb_last_bgsave_status")
        if int(info.get("aof_enabled", 0)) and str(info.get("aof_last_write_status", "ok")) != "ok":
            bad["aof_last_write_status"] = info.get("aof_last_write_status")
        if bad:
            findings.append(Finding("redis.persistence", SERVER, bad))
        pings = self._ping_ms(int(opt("ping_samples", 20)))
        p95 = pings[int(len(pings) * 0.95) - 1] if pings else 0.0
        metrics["read_latency_ms"] = pings[len(pings) // 2] if pings else 0.0
        try:
            entries = client.slowlog_get(128)
        except redis.ResponseError:
            entries = []
        # the first check only learns where the slow log stands; later ones report what is new since
        last_seen = int(state["slowlog_last_id"]) if same_server and "slowlog_last_id" in state else None
        newest = max((int(e["id"]) for e in entries), default=-1 if last_seen is None else last_seen)
        slow = [] if last_seen is None else [{"id": int(e["id"]), "micros": int(e["duration"]), "command": _command(e)}
                                             for e in entries if int(e["id"]) > last_seen and _s(e.get("client_name", b"")) != CLIENT_NAME]
        try:
            latest = client.execute_command("LATENCY", "LATEST") or []
        except redis.ResponseError:
            latest = []
        since = float(state.get("checked_at", time.time())) if same_server else time.time()
        events = [{"event": _s(e[0]), "at": int(e[1]), "latest_ms": int(e[2]), "max_ms": int(e[3])} for e in latest if int(e[1]) > since]
        if p95 >= float(opt("latency_ms", 10.0)) or slow or events:
            findings.append(Finding("redis.latency", SERVER, {"ping_p95_ms": round(p95, 3), "slow_commands": slow[:10], "latency_events": events[:10]}))
        if update_state:
            state.update({"run_id": run_id, "evicted_keys": evicted, "keyspace_hits": hits, "keyspace_misses": misses,
                          "slowlog_last_id": newest, "checked_at": time.time()})
        return findings, metrics

    # ------------------------------------------------------------------ keys
    _script_sha: bytes | str | None = None
    _scripting_allowed = True  # False where the server or the user's ACL does not allow scripts

    @property
    def _scripting(self) -> bool:
        """The batch script costs the client a third of what plain commands do, and the server more: an
        on-demand check (full speed, a person waiting) uses it, scheduled monitoring spares the server."""
        return self._scripting_allowed and bool(self.config.opt("read_script", self.config.full_speed))

    def _read_commands(self, keys: list[bytes], kinds: list[str]) -> tuple[list[tuple], bool]:
        """The commands that read `keys`, and whether they are the batch script (one per slice) or plain
        commands (two per key, where scripting is not allowed or not wanted)."""
        flags = "".join("g" if kind == GENERIC else "h" for kind in kinds)
        if self._scripting and self._script_sha is None:
            try:
                self._script_sha = self.client().script_load(_READ_BATCH_LUA)
            except redis.ResponseError:
                self._scripting_allowed = False
        if self._scripting:
            return [("EVALSHA", self._script_sha, len(part), *part, flags[start:start + SCRIPT_SLICE])
                    for start in range(0, len(keys), SCRIPT_SLICE) if (part := keys[start:start + SCRIPT_SLICE])], True
        out: list[tuple] = []
        for key, flag in zip(keys, flags, strict=True):
            out += [("PTTL", key), ("MEMORY", "USAGE", key, "SAMPLES", "0") if flag == "g" else ("HGETALL", key)]
        return out, False

    def _parse_reads(self, replies: list, keys: list[bytes], kinds: list[str], scripted: bool) -> list[tuple[int, object]]:
        """(pttl, body) per key: body is the hash's fields (dict), the generic key's memory usage (int), or an
        exception (a layout key that is not a hash). `scripted` says how the replies were asked for: a scan
        sends the next batch's reads before it parses this one, so the current mode may have changed since."""
        flat = replies
        if scripted:
            if any(isinstance(r, redis.exceptions.NoScriptError) for r in replies):
                self._script_sha = None  # the script cache was flushed meanwhile: load it again and read anew
                return self._read_keys(keys, kinds)
            if any(isinstance(r, redis.exceptions.NoPermissionError) for r in replies):
                self._scripting_allowed = False  # the ACL loads scripts but does not run them: plain commands
                return self._read_keys(keys, kinds)
            flat = []
            for blob in replies:
                if isinstance(blob, Exception):
                    raise blob
                flat.extend(msgpack.unpackb(blob, raw=True))
        out: list[tuple[int, object]] = []
        for i, kind in enumerate(kinds):
            pttl, body = flat[2 * i], flat[2 * i + 1]
            if kind == GENERIC:
                body = body if isinstance(body, int) else 0
            elif isinstance(body, list):
                body = dict(zip(body[::2], body[1::2], strict=True))
            elif isinstance(body, bytes | Exception):
                body = body if isinstance(body, Exception) else redis.ResponseError(body.decode(errors="replace"))
            elif not isinstance(body, dict):
                body = redis.ResponseError("the key vanished")
            out.append((int(pttl), body))
        return out

    def _read_keys(self, keys: list[bytes], kinds: list[str]) -> list[tuple[int, object]]:
        """Read `keys` now, in one pipelined round trip."""
        commands, scripted = self._read_commands(keys, kinds)
        pipe = self.client().pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return self._parse_reads(pipe.execute(raise_on_error=False), keys, kinds, scripted)

    def _key_findings(self, keys: list[bytes], kinds: list[str], checks: EntryChecks, counters: dict[str, int],
                      replies: list[tuple[int, object]] | None = None) -> None:
        opt = self.config.opt
        big = int(opt("big_key_bytes", 1 << 20))
        add = checks.findings.append
        entries = []
        feed = entries.append
        replies = self._read_keys(keys, kinds) if replies is None else replies
        for key, kind, (pttl, body) in zip(keys, kinds, replies, strict=True):
            if pttl == -2:
                continue  # expired or deleted between SCAN and read
            subject = subject_of(key)
            counters["cache_keys"] += 1
            if pttl == -1:
                add(Finding("redis.keys_without_ttl", subject, {"layout": kind}))
            else:
                counters["with_ttl"] += 1
            if kind == GENERIC:
                size = int(body) if isinstance(body, int) else 0
            elif isinstance(body, Exception):
                add(Finding("redis.entry_undecodable", subject, {"why": f"not a hash ({body})"}))
                continue
            else:
                size = sum(len(k) + len(v) for k, v in body.items())
                entry, problem = (decode_langchain if kind == LANGCHAIN else decode_redisvl)(subject, body)
                if problem:
                    add(Finding("redis.entry_undecodable", subject, {"layout": kind, "why": problem}))
                elif entry is not None:
                    feed(entry)
            counters["bytes"] += size
            if size >= big:
                add(Finding("redis.big_keys", subject, {"bytes": size, "layout": kind}))
        checks.feed_many(entries)

    def _scan(self, checks: EntryChecks) -> dict[str, int]:
        redisvl, generic = self.prefixes()
        langchain = bool(self.config.opt("langchain", True))
        counters = {"cache_keys": 0, "with_ttl": 0, "bytes": 0, "scanned": 0}

        def reads(batch: list[bytes]) -> tuple[list[tuple], tuple[list[bytes], list[str], bool]]:
            pairs = [(k, kind) for k in batch if (kind := classify(k, redisvl, generic, langchain))]
            keys, kinds = [k for k, _ in pairs], [kind for _, kind in pairs]
            commands, scripted = self._read_commands(keys, kinds) if keys else ([], False)
            return commands, (keys, kinds, scripted)

        for batch, (keys, kinds, scripted), replies in self.scan_reading(reads):
            counters["scanned"] += len(batch)
            if keys:
                self._key_findings(keys, kinds, checks, counters, self._parse_reads(replies, keys, kinds, scripted))
        return counters

    # ------------------------------------------------------------------ protocol
    def check(self, *, now: float | None = None, incremental: bool = True) -> CheckOutcome:
        try:
            self.ping()
            info = self.client().info("all")
            state = self._state()
            checks = EntryChecks(self.config.allowed_models)
            counters = self._scan(checks)
            findings = checks.finish()
            server, metrics = self._server_findings(info, state, with_ttl=counters["with_ttl"], cache_keys=counters["cache_keys"], update_state=True)
        except Unreachable as exc:
            return CheckOutcome(reachable=False, findings=[Finding("target.unreachable", self.shown_location, {"error": str(exc)})], error=str(exc))
        except redis.RedisError as exc:
            # the server went away mid-check: nothing is concluded from half a scan
            text = f"{self.shown_location}: {describe_error(exc)} (during the check)"
            return CheckOutcome(reachable=False, findings=[Finding("target.unreachable", self.shown_location, {"error": text})], error=text)
        finally:
            self.close()
        self._save_state(state)
        metrics["entries"] = float(counters["cache_keys"])
        stats = {"entries": counters["cache_keys"], "keys_scanned": counters["scanned"], "cache_bytes": counters["bytes"],
                 "redis_version": info.get("redis_version"), "maxmemory_policy": info.get("maxmemory_policy"), "files_read": 0}
        evidence = {"poisoned_timestamps": sorted(checks.poisoned_timestamps)[:2000], "evicted_keys": info.get("evicted_keys"),
                    "used_memory": info.get("used_memory"), "maxmemory": info.get("maxmemory")}
        return CheckOutcome(reachable=True, findings=server + findings, metrics=metrics, stats=stats, evidence=evidence)

    def recheck(self, subjects: list[str], *, now: float | None = None) -> list[Finding]:
        try:
            self.ping()
            out: list[Finding] = []
            if SERVER in subjects:
                info = self.client().info("all")
                server, _ = self._server_findings(info, self._state(), with_ttl=0, cache_keys=0, update_state=False)
                out.extend(f for f in server if f.code not in ("redis.evictions", "redis.hit_ratio", "redis.latency"))
            keys = [key_of(s) for s in subjects if s != SERVER]
            redisvl, generic = self.prefixes()
            pairs = [(k, classify(k, redisvl, generic, True) or GENERIC) for k in keys]
            checks = EntryChecks(self.config.allowed_models)
            counters = {"cache_keys": 0, "with_ttl": 0, "bytes": 0}
            for start in range(0, len(pairs), 500):
                chunk = pairs[start:start + 500]
                self._key_findings([k for k, _ in chunk], [kind for _, kind in chunk], checks, counters)
            out.extend(checks.findings)
            return out
        except Unreachable as exc:
            return [Finding("target.unreachable", self.shown_location, {"error": str(exc)})]
        finally:
            self.close()

    def fingerprint(self, subject: str) -> str:
        return self.fingerprints([subject])[subject]

    def fingerprints(self, subjects: list[str]) -> dict[str, str]:
        """A key's fingerprint is its content's digest and whether it has a TTL; the server's is its run id."""
        out: dict[str, str] = {}
        try:
            client = self.client()
            keys = [s for s in subjects if s != SERVER]
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                pipe = client.pipeline(transaction=False)
                for subject in chunk:
                    pipe.eval(_FINGERPRINT_LUA, 1, key_of(subject))
                for subject, reply in zip(chunk, pipe.execute(), strict=True):
                    out[subject] = "absent" if not reply else f"{reply[0].decode()}:{'persist' if reply[1] == -1 else 'ttl'}"
            if SERVER in subjects:
                out[SERVER] = f"server:{client.info('server').get('run_id')}"
        except redis.RedisError as exc:
            raise BackendError(f"{self.shown_location}: {describe_error(exc)}") from exc
        return out


def _s(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _command(entry: dict) -> str:
    command = entry.get("command", b"")
    text = _s(command)
    return text[:80]
