"""Redis LLM caches: LangChain RedisCache, RedisVL SemanticCache, and any prefix the admin names."""

from healing.backends.redis.repairs import Repairs


class RedisBackend(Repairs):
    """The backend protocol for a Redis server holding LLM cache keys."""

    kind = "redis"


__all__ = ["RedisBackend"]
