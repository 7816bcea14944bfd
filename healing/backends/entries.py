"""The AI checks on one decoded cache entry, shared by the backends that can read prompts and responses
(SQLite and Redis; the file store has its own byte-level fast path)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from healing.backends.base import Finding
from healing.content import find_secrets, may_hold_secrets, poison_reason

# LangChain's llm string holds the model as ('model_name', 'gpt-4o') or "model_name": "gpt-4o" (also `model`)
_MODEL_RE = re.compile(r"""['"](?:model_name|model|model_id|deployment_name)['"]\s*[:,]\s*['"]([^'"]+)['"]""")


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
        self.prompts: dict[bytes, list[tuple[float, str]]] = {}
        self.multi: set[bytes] = set()  # prompts with more than one copy in this scan
        self._parts: list[dict[bytes, list[tuple[float, str]]]] = []

    def feed(self, entry: Entry) -> None:
        add = self.findings.append
        if entry.response is not None:
            reason = poison_reason(entry.response)
            if reason:
                add(Finding("ai.poisoned_response", entry.subject, {"reason": reason, "timestamp": entry.timestamp}))
                if entry.timestamp is not None:
                    self.poisoned_timestamps.append(entry.timestamp)
        # one pass over the secret triggers for both fields; the patterns run only where a trigger is
        if may_hold_secrets(f"{entry.prompt or ''}\n{entry.response or ''}"):
            for where, text in (("response", entry.response), ("prompt", entry.prompt)):
                leaked = find_secrets(text) if text else None
                if leaked:
                    add(Finding("ai.secret_leak", entry.subject, {"where": where, "found": leaked}))
                    break
        basis = entry.prompt if entry.dup_key is None else entry.dup_key
        if basis:
            key = hashlib.blake2b(" ".join(basis.lower().split()).encode(), digest_size=16).digest()
            copies = self.prompts.setdefault(key, [])
            copies.append((entry.timestamp or 0.0, entry.subject))
            if len(copies) == 2:
                self.multi.add(key)
        if self.allowed_models and entry.model and not allowed(entry.model, self.allowed_models):
            add(Finding("ai.stale_model", entry.subject, {"model": entry.model}))

    def export(self) -> dict:
        """Plain data (for a forked part to send back): findings as tuples, poisoned times, prompt map."""
        return {"findings": [(f.code, f.subject, f.detail) for f in self.findings], "poisoned": self.poisoned_timestamps, "prompts": self.prompts,
                "multi": list(self.multi)}

    def absorb(self, part: dict) -> None:
        self.findings.extend(Finding(code, subject, detail) for code, subject, detail in part["findings"])
        self.poisoned_timestamps.extend(part["poisoned"])
        self._parts.append(part["prompts"])
        self.multi.update(part["multi"])

    def _merged_duplicates(self):
        """Prompts seen more than once across this scan and the absorbed parts. Only keys that repeat are
        merged (found with set operations), so a million unique prompts cost almost nothing here."""
        maps = [m for m in [self.prompts, *self._parts] if m]
        seen: set = set()
        repeated: set = set(self.multi)
        for m in maps:
            keys = m.keys()
            repeated |= keys & seen
            seen |= keys
        for key in repeated:
            yield [copy for m in maps for copy in m.get(key, ())]

    def finish(self) -> list[Finding]:
        """Duplicates: every copy of a prompt but the newest is redundant."""
        for copies in self._merged_duplicates():
            if len(copies) < 2:
                continue
            copies.sort()
            keep = copies[-1][1]
            for ts, subject in copies[:-1]:
                self.findings.append(Finding("ai.duplicate_entries", subject, {"kept": keep, "copies": len(copies), "timestamp": ts or None}))
        return self.findings
