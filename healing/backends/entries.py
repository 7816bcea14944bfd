"""The AI checks on one decoded cache entry, shared by the backends that can read prompts and responses
(SQLite and Redis; the file store has its own byte-level fast path)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from healing.backends.base import Finding
from healing.content import find_secrets, poison_reason

# LangChain's llm string holds the model as ('model_name', 'gpt-4o') or "model_name": "gpt-4o" (also `model`)
_MODEL_RE = re.compile(r"""['"](?:model_name|model|model_id|deployment_name)['"]\s*[:,]\s*['"]([^'"]+)['"]""")
_SPACES = re.compile(r"\s+")


def model_in(text: str | None) -> str | None:
    if not text:
        return None
    match = _MODEL_RE.search(text)
    return match.group(1) if match else None


@dataclass(slots=True)
class Entry:
    subject: str
    prompt: str | None
    response: str | None
    model: str | None = None
    timestamp: float | None = None
    # what makes two entries "the same prompt" (default: the prompt); "" keeps the entry out of duplicates
    dup_key: str | None = None


def allowed(model: str, allowed_models: Iterable[str]) -> bool:
    """An allowed name matches exactly or as a prefix ending in '*' (e.g. 'gpt-4o*')."""
    for name in allowed_models:
        if name == model or (name.endswith("*") and model.startswith(name[:-1])):
            return True
    return False


class EntryChecks:
    """Feed entries one by one; collect findings, the poisoned entries' times and duplicate prompts."""

    def __init__(self, allowed_models: Iterable[str]) -> None:
        self.allowed_models = tuple(allowed_models)
        self.findings: list[Finding] = []
        self.poisoned_timestamps: list[float] = []
        # normalised prompt hash -> [(timestamp, subject)]
        self._prompts: dict[bytes, list[tuple[float, str]]] = {}

    def feed(self, entry: Entry) -> None:
        add = self.findings.append
        if entry.response is not None:
            reason = poison_reason(entry.response)
            if reason:
                add(Finding("ai.poisoned_response", entry.subject, {"reason": reason, "timestamp": entry.timestamp}))
                if entry.timestamp is not None:
                    self.poisoned_timestamps.append(entry.timestamp)
            leaked = find_secrets(entry.response)
            if leaked:
                add(Finding("ai.secret_leak", entry.subject, {"where": "response", "found": leaked}))
        if entry.prompt:
            leaked = find_secrets(entry.prompt)
            if leaked:
                add(Finding("ai.secret_leak", entry.subject, {"where": "prompt", "found": leaked}))
        basis = entry.prompt if entry.dup_key is None else entry.dup_key
        if basis:
            key = hashlib.blake2b(_SPACES.sub(" ", basis.strip().lower()).encode(), digest_size=16).digest()
            self._prompts.setdefault(key, []).append((entry.timestamp or 0.0, entry.subject))
        if self.allowed_models and entry.model and not allowed(entry.model, self.allowed_models):
            add(Finding("ai.stale_model", entry.subject, {"model": entry.model}))

    def finish(self) -> list[Finding]:
        """Duplicates: every copy of a prompt but the newest is redundant."""
        for copies in self._prompts.values():
            if len(copies) < 2:
                continue
            copies.sort()
            keep = copies[-1][1]
            for ts, subject in copies[:-1]:
                self.findings.append(Finding("ai.duplicate_entries", subject, {"kept": keep, "copies": len(copies), "timestamp": ts or None}))
        return self.findings
