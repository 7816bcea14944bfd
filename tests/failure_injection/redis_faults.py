"""One fault per Redis check code, on a cache written by its real clients. An injector returns the
expected subjects, the target options, and optionally a second step to run after a first (baseline)
check, for the codes that are about change since the last check."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from typing import Any

from tests.llm_clients import ANSWER, langchain_redis, langchain_redis_key, redisvl_put


@dataclass
class Fault:
    subjects: list[str]
    options: dict[str, Any] = field(default_factory=dict)
    allowed_models: list[str] = field(default_factory=list)
    after_baseline: Any = None
    cleanup: Any = None


def _healthy(client) -> None:
    langchain_redis(client, 40)
    for i in range(10):
        redisvl_put(client, f"what is fact {i}?", f"Fact {i} is well documented; here is a full explanation of it.", metadata={"model": "gpt-4o"})


def memory_pressure(server, client) -> Fault:
    _healthy(client)
    pipe = client.pipeline(transaction=False)
    for i in range(2000):  # the application's other data: 20 MB of sessions
        pipe.set(f"session:{i}", os.urandom(10000))
    pipe.execute()
    used = client.info("memory")["used_memory"]
    client.config_set("maxmemory-policy", "allkeys-lru")
    client.config_set("maxmemory", int(used / 0.93))
    return Fault(["server"])


def eviction_policy(server, client) -> Fault:
    _healthy(client)
    client.config_set("maxmemory", 512 * 1024 * 1024)
    client.config_set("maxmemory-policy", "noeviction")
    return Fault(["server"])


def evictions(server, client) -> Fault:
    _healthy(client)

    def evict():
        client.config_set("maxmemory-policy", "allkeys-lru")
        client.config_set("maxmemory", client.info("memory")["used_memory"] + 256 * 1024)
        for i in range(2000):
            client.set(f"filler:{i}", os.urandom(1024))
        client.config_set("maxmemory", 0)
        client.delete(*[f"filler:{i}" for i in range(2000)])

    return Fault(["server"], after_baseline=evict)


def hit_ratio(server, client) -> Fault:
    _healthy(client)

    def miss():
        for i in range(3000):
            client.hgetall(langchain_redis_key(f"a prompt nobody cached {i}"))

    return Fault(["server"], after_baseline=miss)


def fragmentation(server, client) -> Fault:
    _healthy(client)
    # many small answers, then nine in ten dropped at random (expiry): every allocator page keeps a few
    # live values, so the server holds far more memory than its data needs
    import random

    pipe = client.pipeline(transaction=False)
    for i in range(200000):
        pipe.set(f"small:{i}", os.urandom(300))
    pipe.execute()
    rng = random.Random(7)
    doomed = [f"small:{i}" for i in range(200000) if rng.random() < 0.9]
    for start in range(0, len(doomed), 5000):
        client.delete(*doomed[start:start + 5000])
    return Fault(["server"], options={"fragmentation_min_waste_bytes": 32 << 20})


def keys_without_ttl(server, client) -> Fault:
    _healthy(client)
    langchain_redis(client, 3, ttl=None, start=100)
    return Fault(sorted(langchain_redis_key(f"prompt number {i}: explain topic {i}") for i in range(100, 103)))


def big_keys(server, client) -> Fault:
    _healthy(client)
    from langchain_community.cache import RedisCache
    from langchain_core.outputs import Generation

    from tests.llm_clients import llm_string

    RedisCache(redis_=client, ttl=3600).update("dump the whole manual", llm_string("gpt-4o-mini"), [Generation(text="chapter. " * 150000)])
    return Fault([langchain_redis_key("dump the whole manual")])


def persistence(server, client) -> Fault:
    _healthy(client)
    doomed = server.workdir / "gone"
    doomed.mkdir(exist_ok=True)
    client.config_set("dir", str(doomed))
    shutil.rmtree(doomed)  # the disk under the server's working directory went away
    client.bgsave()
    import time

    for _ in range(100):
        if client.info("persistence")["rdb_bgsave_in_progress"] == 0:
            break
        time.sleep(0.05)
    return Fault(["server"])


def latency(server, client) -> Fault:
    _healthy(client)

    def slow_script():
        client.eval("local i = 0 while i < 30000000 do i = i + 1 end return i", 0)

    return Fault(["server"], after_baseline=slow_script)


def entry_undecodable(server, client) -> Fault:
    _healthy(client)
    key = langchain_redis_key("prompt number 7: explain topic 7")
    raw = client.hget(key, "0")
    client.hset(key, "0", raw[: len(raw) // 2])  # a torn serialized generation
    vl = redisvl_put(client, "half an entry", "x", metadata={"model": "gpt-4o"})
    client.hdel(vl, "response")
    return Fault(sorted([key, vl]))


def poisoned_response(server, client) -> Fault:
    _healthy(client)
    from langchain_community.cache import RedisCache
    from langchain_core.outputs import Generation

    from tests.llm_clients import llm_string

    RedisCache(redis_=client, ttl=3600).update("summarise the report", llm_string("gpt-4o-mini"),
                                                [Generation(text="Error code: 429 - Rate limit reached for requests. Please try again later.")])
    return Fault([langchain_redis_key("summarise the report")])


def secret_leak(server, client) -> Fault:
    _healthy(client)
    key = redisvl_put(client, "why does auth fail with token ghp_" + "a" * 36 + "?", "The token has expired; create a new one.",
                      metadata={"model": "gpt-4o"})
    return Fault([key])


def stale_model(server, client) -> Fault:
    _healthy(client)
    key = redisvl_put(client, "explain sharding", "Sharding splits data across nodes by key.", metadata={"model": "text-davinci-003"})
    return Fault([key], allowed_models=["gpt-4o*"])


def duplicate_entries(server, client) -> Fault:
    _healthy(client)
    older = redisvl_put(client, "What is a vector index?", ANSWER.format(topic="vectors"), metadata={"model": "gpt-4o"}, filters={"session": "a1"})
    import time

    time.sleep(0.01)
    redisvl_put(client, "what is a  vector index?", ANSWER.format(topic="vectors"), metadata={"model": "gpt-4o"}, filters={"session": "b2"})
    return Fault([older])


REDIS_INJECTORS = {
    "redis.memory_pressure": memory_pressure,
    "redis.eviction_policy": eviction_policy,
    "redis.evictions": evictions,
    "redis.hit_ratio": hit_ratio,
    "redis.fragmentation": fragmentation,
    "redis.keys_without_ttl": keys_without_ttl,
    "redis.big_keys": big_keys,
    "redis.persistence": persistence,
    "redis.latency": latency,
    "redis.entry_undecodable": entry_undecodable,
    "ai.poisoned_response": poisoned_response,
    "ai.secret_leak": secret_leak,
    "ai.stale_model": stale_model,
    "ai.duplicate_entries": duplicate_entries,
}
