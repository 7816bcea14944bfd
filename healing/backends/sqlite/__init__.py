"""SQLite LLM caches: aicache `cache.db`, LangChain `SQLiteCache`, GPTCache `sqlite.db` (see layouts)."""

from healing.backends.sqlite.repairs import Repairs


class SqliteBackend(Repairs):
    """The backend protocol for a SQLite LLM cache file."""

    kind = "sqlite"


__all__ = ["SqliteBackend"]
