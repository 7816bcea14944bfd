"""Repairs of a Redis cache. Keys go to the quarantine as DUMP payloads with their expiry and come back
with RESTORE; every conditional change is one Lua script, so it happens only to the key as planned.
The journal is written before each batch, so a server that goes away mid-repair leaves a record a later
task rolls back from."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import redis

from healing.backends.aicache_fs.repairs import Journal
from healing.backends.base import ApplyResult, BackendError, PlanDraft
from healing.backends.redis.checks import DIGEST_LUA, Checks
from healing.backends.redis.layouts import key_of
from healing.backends.redis.store import SERVER, describe_error
from healing.catalog import REPAIRS, check_spec

BATCH = 200
# expire a key at the planned moment only if it still has no TTL
_EXPIRE_IF_PERSISTENT = "if redis.call('PTTL', KEYS[1]) == -1 then return redis.call('PEXPIREAT', KEYS[1], ARGV[1]) end return -1"
# undo that only if the expiry is still the one we set
_PERSIST_IF_OURS = "if redis.call('PEXPIRETIME', KEYS[1]) == tonumber(ARGV[1]) then return redis.call('PERSIST', KEYS[1]) end return -1"
# unlink a key only if its content is still what was copied to the quarantine
_UNLINK_IF_SAME = DIGEST_LUA + " if d and redis.sha1hex(d) == ARGV[1] then return redis.call('UNLINK', KEYS[1]) end return -1"


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


class Repairs(Checks):
    def plan(self, code: str, subjects: list[str], *, now: float | None = None) -> PlanDraft:
        action = check_spec(code).repair_for(self.kind)
        if action is None:
            raise BackendError(f"{code} has no repair: it is for a person to act on")
        risk = REPAIRS[action].risk
        ops: list[dict[str, Any]] = []
        skipped: list[dict[str, Any]] = []
        blast_bytes = 0
        try:
            prints = self.fingerprints(subjects)
            client = self.client()
            if action in ("set_ttl", "quarantine_keys"):
                keys = [s for s in subjects if s != SERVER]
                sizes = {}
                for start in range(0, len(keys), 500):
                    pipe = client.pipeline(transaction=False)
                    for s in keys[start:start + 500]:
                        pipe.execute_command("MEMORY", "USAGE", key_of(s), "SAMPLES", "0")
                    for s, size in zip(keys[start:start + 500], pipe.execute(raise_on_error=False), strict=True):
                        sizes[s] = size if isinstance(size, int) else 0
                base = int(self.config.opt("default_ttl_seconds", 7 * 86400))
                jitter = float(self.config.opt("ttl_jitter", 0.1))
                rng = random.Random(hashlib.sha256("\n".join(keys).encode()).digest())  # the same subjects plan the same TTLs
                for s in keys:
                    if prints[s] == "absent":
                        skipped.append({"subject": s, "reason": "already gone"})
                        continue
                    op = {"op": action, "subject": s, "fingerprint": prints[s], "bytes": sizes[s]}
                    if action == "set_ttl":
                        op["ttl_seconds"] = int(base * (1 + rng.uniform(-jitter, jitter)))
                    ops.append(op)
                    blast_bytes += sizes[s]
            elif action == "memory_purge":
                ops.append({"op": "memory_purge", "subject": SERVER, "fingerprint": prints[SERVER]})
            elif action == "set_eviction_policy":
                current = client.config_get("maxmemory-policy").get("maxmemory-policy")
                ops.append({"op": "set_eviction_policy", "subject": SERVER, "fingerprint": prints[SERVER], "policy_from": current,
                            "policy_to": str(self.config.opt("eviction_policy", "allkeys-lru"))})
            else:  # pragma: no cover - the catalogue and this switch are kept together
                raise BackendError(f"unknown action {action}")
        except redis.RedisError as exc:
            raise BackendError(f"{self.shown_location}: {describe_error(exc)}") from exc
        finally:
            self.close()
        return PlanDraft(action=action, risk=risk, operations=ops, blast_entries=len(ops), blast_bytes=blast_bytes,
                         summary=f"{REPAIRS[action].title}: {len(ops)} operation(s) on {self.shown_location}", skipped=skipped)

    # ------------------------------------------------------------------ apply
    def apply(self, plan: dict[str, Any], workdir: Path) -> ApplyResult:
        workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        journal = Journal(workdir / "journal.jsonl")
        applied: list[dict[str, Any]] = []
        skipped: list[dict[str, Any]] = []
        ops = plan["operations"]
        try:
            current = self.fingerprints([op["subject"] for op in ops])
            ready = []
            for seq, op in enumerate(ops):
                if current.get(op["subject"]) != op["fingerprint"]:
                    skipped.append({"subject": op["subject"], "reason": "changed since the plan was approved"})
                    continue
                ready.append((seq, op))
            for start in range(0, len(ready), BATCH):
                chunk = ready[start:start + BATCH]
                kind = chunk[0][1]["op"]
                handler = getattr(self, f"_apply_{kind}", None)
                if handler is None:
                    raise BackendError(f"unknown operation {kind!r} in the plan")
                for subject, reason in handler(chunk, workdir, journal):
                    if reason is None:
                        applied.append({"subject": subject, "op": kind})
                    else:
                        skipped.append({"subject": subject, "reason": reason})
        except redis.RedisError as exc:
            raise BackendError(f"{self.shown_location}: {describe_error(exc)} (mid-repair; the journal holds what was done)") from exc
        finally:
            self.close()
        journal.write({"phase": "complete", "applied": len(applied), "skipped": len(skipped)})
        manifest = {"store": self.shown_location, "kind": self.kind, "written_at": time.time(), "items": journal.read()}
        (workdir / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
        return ApplyResult(applied=applied, skipped=skipped)

    def _apply_quarantine_keys(self, chunk: list, workdir: Path, journal: Journal) -> list[tuple[str, str | None]]:
        client = self.client()
        pipe = client.pipeline(transaction=False)
        for _, op in chunk:
            pipe.dump(key_of(op["subject"]))
            pipe.pexpiretime(key_of(op["subject"]))
            pipe.eval(DIGEST_LUA + " if d then return redis.sha1hex(d) end return false", 1, key_of(op["subject"]))
        replies = pipe.execute()
        keys_dir = workdir / "keys"
        keys_dir.mkdir(exist_ok=True)
        items, out = [], []
        for i, (seq, op) in enumerate(chunk):
            payload, expire_at, digest = replies[3 * i], replies[3 * i + 1], replies[3 * i + 2]
            if payload is None or digest is None:
                out.append((op["subject"], "already gone"))
                continue
            sha1 = digest.decode()
            name = hashlib.sha256(key_of(op["subject"])).hexdigest() + ".dump"
            _write_durable(keys_dir / name, payload)
            items.append({"seq": seq, "subject": op["subject"], "key_b64": _b64(key_of(op["subject"])), "file": f"keys/{name}",
                          "sha1": sha1, "sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload),
                          "expire_at_ms": expire_at if expire_at and expire_at > 0 else 0})
        if not items:
            return out
        _fsync_dir(keys_dir)
        journal.write({"phase": "intent", "op": "quarantine_keys", "items": items})
        pipe = client.pipeline(transaction=False)
        for item in items:
            pipe.eval(_UNLINK_IF_SAME, 1, key_of(item["subject"]), item["sha1"])
        results = pipe.execute()
        done = [item["subject"] for item, r in zip(items, results, strict=True) if r == 1]
        journal.write({"phase": "done", "op": "quarantine_keys", "subjects": done})
        out += [(item["subject"], None if r == 1 else "changed while being quarantined") for item, r in zip(items, results, strict=True)]
        return out

    def _apply_set_ttl(self, chunk: list, workdir: Path, journal: Journal) -> list[tuple[str, str | None]]:
        client = self.client()
        now_ms = int(time.time() * 1000)
        items = [{"seq": seq, "subject": op["subject"], "key_b64": _b64(key_of(op["subject"])), "expire_at_ms": now_ms + op["ttl_seconds"] * 1000}
                 for seq, op in chunk]
        journal.write({"phase": "intent", "op": "set_ttl", "items": items})
        pipe = client.pipeline(transaction=False)
        for item in items:
            pipe.eval(_EXPIRE_IF_PERSISTENT, 1, key_of(item["subject"]), item["expire_at_ms"])
        results = pipe.execute()
        journal.write({"phase": "done", "op": "set_ttl", "subjects": [i["subject"] for i, r in zip(items, results, strict=True) if r == 1]})
        return [(i["subject"], None if r == 1 else "the key got a TTL or went away meanwhile") for i, r in zip(items, results, strict=True)]

    def _apply_memory_purge(self, chunk: list, workdir: Path, journal: Journal) -> list[tuple[str, str | None]]:
        client = self.client()
        before = client.info("memory")
        journal.write({"phase": "intent", "op": "memory_purge", "used_memory_rss": before.get("used_memory_rss")})
        try:
            client.execute_command("MEMORY", "PURGE")
        except redis.ResponseError as exc:
            return [(SERVER, f"MEMORY PURGE is not available here ({exc})")]
        after = client.info("memory")
        journal.write({"phase": "done", "op": "memory_purge", "used_memory_rss": after.get("used_memory_rss")})
        return [(SERVER, None)]

    def _apply_set_eviction_policy(self, chunk: list, workdir: Path, journal: Journal) -> list[tuple[str, str | None]]:
        _, op = chunk[0]
        client = self.client()
        current = client.config_get("maxmemory-policy").get("maxmemory-policy")
        if current != op["policy_from"]:
            return [(SERVER, f"the policy changed since planning (now {current})")]
        journal.write({"phase": "intent", "op": "set_eviction_policy", "policy_from": current, "policy_to": op["policy_to"]})
        try:
            client.config_set("maxmemory-policy", op["policy_to"])
        except redis.ResponseError as exc:
            raise BackendError(f"CONFIG SET refused ({exc}): on a managed Redis, change the policy in its console") from exc
        journal.write({"phase": "done", "op": "set_eviction_policy"})
        return [(SERVER, None)]

    # ------------------------------------------------------------------ rollback
    def rollback(self, workdir: Path) -> dict[str, Any]:
        """Undo what the journal says, newest first. Idempotent; raises if the server cannot be reached, so
        that the repair stays pending and is rolled back once it answers."""
        journal = Journal(workdir / "journal.jsonl")
        records = journal.read()
        restored: list[str] = []
        superseded: list[dict[str, str]] = []
        try:
            client = self.client()
            for intent in reversed([r for r in records if r.get("phase") == "intent"]):
                op = intent["op"]
                if op == "quarantine_keys":
                    self._restore_keys(client, intent["items"], workdir, restored, superseded)
                elif op == "set_ttl":
                    pipe = client.pipeline(transaction=False)
                    for item in intent["items"]:
                        pipe.eval(_PERSIST_IF_OURS, 1, base64.b64decode(item["key_b64"]), item["expire_at_ms"])
                    for item, r in zip(intent["items"], pipe.execute(), strict=True):
                        if r == 1:
                            restored.append(item["subject"])
                elif op == "set_eviction_policy":
                    current = client.config_get("maxmemory-policy").get("maxmemory-policy")
                    if current == intent["policy_to"]:
                        client.config_set("maxmemory-policy", intent["policy_from"])
                        restored.append(SERVER)
                    elif current != intent["policy_from"]:
                        superseded.append({"subject": SERVER, "reason": f"someone set the policy to {current} since"})
        except redis.RedisError as exc:
            raise BackendError(f"{self.shown_location}: {describe_error(exc)} (during rollback; it will be retried)") from exc
        finally:
            self.close()
        journal.write({"phase": "rolled_back", "restored": len(restored), "superseded": len(superseded)})
        return {"restored": restored, "superseded": superseded}

    def _restore_keys(self, client: redis.Redis, items: list[dict], workdir: Path, restored: list, superseded: list) -> None:
        now_ms = int(time.time() * 1000)
        for item in items:
            key = base64.b64decode(item["key_b64"])
            payload = (workdir / item["file"]).read_bytes()
            if hashlib.sha256(payload).hexdigest() != item["sha256"]:
                superseded.append({"subject": item["subject"], "reason": "the quarantined payload does not match its manifest"})
                continue
            current = client.eval(DIGEST_LUA + " if d then return redis.sha1hex(d) end return false", 1, key)
            if current is not None:
                if current.decode() == item["sha1"]:
                    continue  # never removed (or already restored)
                superseded.append({"subject": item["subject"], "reason": "the client wrote a new value under this key"})
                continue
            expire_at = int(item.get("expire_at_ms") or 0)
            if expire_at and expire_at <= now_ms:
                superseded.append({"subject": item["subject"], "reason": "its TTL ran out meanwhile"})
                continue
            try:
                if expire_at:
                    client.restore(key, expire_at, payload, absttl=True)
                else:
                    client.restore(key, 0, payload)
            except redis.ResponseError as exc:
                if "BUSYKEY" in str(exc):
                    superseded.append({"subject": item["subject"], "reason": "the client wrote a new value under this key"})
                    continue
                raise
            restored.append(item["subject"])


def _write_durable(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
