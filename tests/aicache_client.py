"""A stand-in for aicache's CoreCache with the same on-disk behaviour, for tests.

aicache is not installable from the package registry here, so this reproduces exactly what its
CoreCache does to the directory: entries `<sha256(prompt + json.dumps(context, sort_keys=True))>.json`
written in place with `json.dump(indent=2)` on set and compactly on get (access bump), and the whole
`.index.json` rewritten in place after every change, with no temp file, no rename and no lock.
Each instance keeps its own in-memory index, as the real client does, so two instances lose each
other's index updates the way two real processes do.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any


class CoreCache:
    def __init__(self, cache_dir: str | Path) -> None:
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._index_file = self.cache_dir / ".index.json"
        self._load_index()

    def _load_index(self) -> None:
        if self._index_file.exists():
            try:
                with open(self._index_file) as fh:
                    self._index = json.load(fh)
            except (json.JSONDecodeError, OSError):
                self._index = {}
        else:
            self._index = {}

    def _save_index(self) -> None:
        with open(self._index_file, "w") as fh:
            json.dump(self._index, fh)

    @staticmethod
    def key_for(prompt: str, context: dict[str, Any] | None = None) -> str:
        hasher = hashlib.sha256(prompt.encode("utf-8"))
        if context:
            hasher.update(json.dumps(context, sort_keys=True).encode("utf-8"))
        return hasher.hexdigest()

    def set(self, prompt: str, response: str, context: dict | None = None, ttl_seconds: int | None = None, *, now: float | None = None) -> str:
        key = self.key_for(prompt, context)
        ts = time.time() if now is None else now
        entry = {"key": key, "value": response, "timestamp": ts, "ttl_seconds": ttl_seconds, "access_count": 0, "last_accessed": ts}
        with open(self.cache_dir / f"{key}.json", "w") as fh:
            json.dump(entry, fh, indent=2)
        self._index[key] = {
            "created_at": ts,
            "last_accessed": ts,
            "access_count": 0,
            "prompt_preview": prompt[:100] + "..." if len(prompt) > 100 else prompt,
            "response_length": len(response),
        }
        self._save_index()
        return key

    def get(self, prompt: str, context: dict | None = None) -> dict | None:
        key = self.key_for(prompt, context)
        path = self.cache_dir / f"{key}.json"
        if not path.exists():
            return None
        try:
            with open(path) as fh:
                data = json.load(fh)
            if data.get("ttl_seconds") is not None and time.time() > data["timestamp"] + data["ttl_seconds"]:
                self.delete(key)
                return None
            data["access_count"] = data.get("access_count", 0) + 1
            data["last_accessed"] = time.time()
            with open(path, "w") as fh:
                json.dump(data, fh)
            if key in self._index:
                self._index[key]["last_accessed"] = data["last_accessed"]
                self._index[key]["access_count"] = data["access_count"]
                self._save_index()
            return data
        except (json.JSONDecodeError, OSError, TypeError):
            self.delete(key)
            return None

    def delete(self, key: str) -> bool:
        path = self.cache_dir / f"{key}.json"
        ok = False
        if path.exists():
            path.unlink()
            ok = True
        if key in self._index:
            del self._index[key]
            self._save_index()
        return ok
