"""The AI checks on one decoded cache entry, shared by the backends that can read prompts and responses
(SQLite and Redis; the file store has its own byte-level fast path)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from healing.backends.base import Finding
from healing.content import find_secrets, poison_candidates, poison_reason, secret_candidates

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
        self.feed_many([entry])

    def feed_many(self, entries: list[Entry]) -> None:
        """Check a batch: the content tests run only on the entries their triggers point at, found for the
        whole batch at once, so a batch of healthy answers costs a few substring searches."""
        add = self.findings.append
        responses = [entry.response or "" for entry in entries]
        for i in poison_candidates(responses):
            entry = entries[i]
            reason = poison_reason(responses[i]) if entry.response is not None else None
            if reason:
                add(Finding("ai.poisoned_response", entry.subject, {"reason": reason, "timestamp": entry.timestamp}))
                if entry.timestamp is not None:
                    self.poisoned_timestamps.append(entry.timestamp)
        count = len(entries)
        texts = responses + [entry.prompt or "" for entry in entries]
        for i in sorted({i % count for i in secret_candidates(texts)}):
            entry = entries[i]
            for where, text in (("response", entry.response), ("prompt", entry.prompt)):
                leaked = find_secrets(text) if text else None
                if leaked:
                    add(Finding("ai.secret_leak", entry.subject, {"where": where, "found": leaked}))
                    break
        prompts, multi = self.prompts, self.multi
        for entry in entries:
            basis = entry.prompt if entry.dup_key is None else entry.dup_key
            if basis:
                key = hashlib.blake2b(" ".join(basis.lower().split()).encode(), digest_size=16).digest()
                copies = prompts.setdefault(key, [])
                copies.append((entry.timestamp or 0.0, entry.subject))
                if len(copies) == 2:
                    multi.add(key)
        if self.allowed_models:
            for entry in entries:
                if entry.model and not allowed(entry.model, self.allowed_models):
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
