"""What makes a cached AI answer bad: poisoned responses and leaked secrets.

Shared by every backend that can read prompts or responses. Matching is done with a few compiled
regular expressions so that it costs microseconds per entry.
"""

from __future__ import annotations

import hashlib
import re
from bisect import bisect_right
from itertools import accumulate

# A response that is really an error, a rate limit, a refusal or an outage page. Each pattern has cheap
# trigger substrings: the regular expression runs only when one of them is in the (lower-cased) head,
# so a healthy answer costs a few substring searches.
_POISON_PATTERNS: list[tuple[str, tuple[str, ...], str]] = [
    ("rate_limit", ("rate", "too many", "quota", "429"),
     r"\b(rate[ _-]?limit (reached|exceeded)|rate_limit_exceeded|^\s*(429 )?too many requests|quota exceeded|insufficient_quota|error code: 429)"),
    ("provider_error", ("error", "unavailable", "gateway", "overloaded", "upstream"),
     r"(\binternal server error\b|\b50[234] service unavailable\b|^\s*service unavailable\b|\bbad gateway\b|\bgateway time-?out\b"
     r"|\boverloaded_error\b|^\s*\{\s*\"error\"\s*:|\bapierror\b|\bapiconnectionerror\b|\bupstream connect error\b|^\s*error code: 5\d\d)"),
    ("auth_error", ("api key", "unauthori", "authentication_error"),
     r"(\binvalid api key\b|\bincorrect api key\b|\bunauthorized\b|\bauthentication_error\b)"),
    ("context_error", ("context",), r"(\bcontext_length_exceeded\b|\bmaximum context length\b)"),
    ("refusal", ("sorry", "can't", "cannot", "as an ai", "unable"),
     r"^\s*(i'?m sorry,? but i (can(no|')t|am unable to)|i can(no|')t (help|assist) with (that|this)|as an ai( language model)?,? i (can(no|')t|am unable))"),
    ("timeout", ("time",), r"^\s*(request timed out|timeout error|read timed out)"),
]
_POISON = [(name, triggers, re.compile(pattern)) for name, triggers, pattern in _POISON_PATTERNS]
# only the head of a short answer is searched: errors are short, real answers that mention "429" are long
_POISON_HEAD = 200
_LONG_ANSWER = 600

_SECRET_PATTERNS: list[tuple[str, tuple[str, ...], str]] = [
    ("openai_key", ("sk-",), r"\bsk-(?:proj-|svcacct-|ant-)?[A-Za-z0-9_-]{20,}"),
    ("aws_access_key", ("AKIA", "ASIA"), r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    ("github_token", ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"), r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    ("google_api_key", ("AIza",), r"\bAIza[0-9A-Za-z_-]{35}\b"),
    ("slack_token", ("xox",), r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    ("private_key", ("-----BEGIN",), r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----"),
    ("jwt", ("eyJ",), r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
    ("bearer_token", ("earer ",), r"\b[Bb]earer\s+[A-Za-z0-9._~+/-]{24,}=*"),
    ("email", ("@",), r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
]
_SECRETS = [(name, re.compile(pattern)) for name, _, pattern in _SECRET_PATTERNS]
# (trigger, index into _SECRETS), flat so that the healthy path is a short loop of C substring searches
_SECRET_TRIGGERS = [(trigger, i) for i, (_, triggers, _) in enumerate(_SECRET_PATTERNS) for trigger in triggers]
_POISON_TRIGGERS = [(trigger, i) for i, (_, triggers, _) in enumerate(_POISON_PATTERNS) for trigger in triggers]


def poison_reason(response: str) -> str | None:
    """Name why a cached response is not a real answer, or None when it looks like one."""
    stripped = response.strip()
    if not stripped:
        return "empty"
    if len(stripped) < _LONG_ANSWER:
        head = stripped[:_POISON_HEAD].lower()
        hit = {i for trigger, i in _POISON_TRIGGERS if trigger in head}
        for i in sorted(hit):
            if _POISON[i][2].search(head):
                return _POISON[i][0]
    if "```" in stripped and stripped.count("```") % 2 == 1:
        return "cut_off"
    return None


def redact_secret(kind: str, value: str) -> str:
    """A form safe to store and show: kind, a few leading characters, and a short hash."""
    digest = hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()[:12]
    if kind == "email":
        user, _, domain = value.partition("@")
        shown = (user[:1] + "***@" + domain) if domain else "***"
    else:
        shown = value[:4] + "…"
    return f"{kind}:{shown}#{digest}"


def find_secrets(text: str) -> list[str]:
    """Redacted forms of the secrets in `text` (never the secrets themselves)."""
    found: list[str] = []
    hit = {i for trigger, i in _SECRET_TRIGGERS if trigger in text}
    for i in sorted(hit):
        kind, pattern = _SECRETS[i]
        for match in pattern.finditer(text):
            found.append(redact_secret(kind, match.group(0)))
            if len(found) >= 5:
                return found
    return found


_SECRET_TRIGGER_TEXTS = sorted({trigger for trigger, _ in _SECRET_TRIGGERS})
_POISON_TRIGGER_TEXTS = sorted({trigger for trigger, _ in _POISON_TRIGGERS} | {"```"})


def _containing(texts: list[str], triggers: list[str], *, lower: bool = False) -> set[int]:
    """Indices of the texts that contain at least one trigger, found by C substring searches over the
    texts joined once, instead of a loop over the triggers per text (a large batch of healthy answers
    costs a few passes of memchr). Triggers never contain the separator, so no match spans two texts."""
    joined = "\x00".join(texts)
    if lower:
        lowered = joined.lower()
        if len(lowered) != len(joined):  # a few characters lower-case to two: offsets must follow the lowered texts
            texts = [text.lower() for text in texts]
            lowered = "\x00".join(texts)
        joined = lowered
    hits: set[int] = set()
    ends: list[int] | None = None
    for trigger in triggers:
        pos = joined.find(trigger)
        if pos < 0:
            continue
        if ends is None:
            ends = list(accumulate(len(text) + 1 for text in texts))
        while pos >= 0:
            i = bisect_right(ends, pos)
            hits.add(i)
            pos = joined.find(trigger, ends[i])  # on to the next text: one hit per text is enough
    return hits


def poison_candidates(responses: list[str]) -> list[int]:
    """Indices of the responses `poison_reason` may flag (a superset; it decides): empty ones and those
    holding a trigger or a code fence. The rest cannot be poisoned and need no further look."""
    hits = _containing(responses, _POISON_TRIGGER_TEXTS, lower=True)
    hits.update(i for i, text in enumerate(responses) if not text or text.isspace())
    return sorted(hits)


def secret_candidates(texts: list[str]) -> list[int]:
    """Indices of the texts in which some secret format may occur (a superset; `find_secrets` decides)."""
    return sorted(_containing(texts, _SECRET_TRIGGER_TEXTS))
