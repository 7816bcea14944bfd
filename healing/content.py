"""What makes a cached AI answer bad: poisoned responses and leaked secrets.

Shared by every backend that can read prompts or responses. Matching is done with a few compiled
regular expressions so that it costs microseconds per entry.
"""

from __future__ import annotations

import hashlib
import re

# A response that is really an error, a rate limit, a refusal or an outage page.
_POISON_PATTERNS: list[tuple[str, str]] = [
    ("rate_limit", r"\b(rate[ _-]?limit (reached|exceeded)|rate_limit_exceeded|^\s*(429 )?too many requests|quota exceeded|insufficient_quota|error code: 429)"),
    ("provider_error", r"(\binternal server error\b|\b50[234] service unavailable\b|^\s*service unavailable\b|\bbad gateway\b|\bgateway time-?out\b|\boverloaded_error\b|^\s*\{\s*\"error\"\s*:|\bAPIError\b|\bAPIConnectionError\b|\bupstream connect error\b|^\s*error code: 5\d\d)"),
    ("auth_error", r"(\binvalid api key\b|\bincorrect api key\b|\bunauthorized\b|\bauthentication_error\b|\b401\b.{0,20}\bunauthori)"),
    ("context_error", r"(\bcontext_length_exceeded\b|\bmaximum context length\b)"),
    ("refusal", r"^\s*(i'?m sorry,? but i (can(no|')t|am unable to)|i can(no|')t (help|assist) with (that|this)|as an ai( language model)?,? i (can(no|')t|am unable))"),
    ("timeout", r"^\s*(request timed out|timeout error|read timed out)"),
]
_POISON_RE = re.compile("|".join(f"(?P<{name}>{pattern})" for name, pattern in _POISON_PATTERNS), re.IGNORECASE)
# only the head of a long answer is searched: errors are short, real answers that mention "429" are long
_POISON_HEAD = 200
_LONG_ANSWER = 600

_SECRET_PATTERNS: list[tuple[str, str]] = [
    ("openai_key", r"\bsk-(?:proj-|svcacct-|ant-)?[A-Za-z0-9_-]{20,}"),
    ("aws_access_key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    ("github_token", r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    ("google_api_key", r"\bAIza[0-9A-Za-z_-]{35}\b"),
    ("slack_token", r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    ("private_key", r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----"),
    ("jwt", r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
    ("bearer_token", r"\b[Bb]earer\s+[A-Za-z0-9._~+/-]{24,}=*"),
    ("email", r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"),
]
_SECRET_RE = re.compile("|".join(f"(?P<{name}>{pattern})" for name, pattern in _SECRET_PATTERNS))


def poison_reason(response: str) -> str | None:
    """Name why a cached response is not a real answer, or None when it looks like one."""
    stripped = response.strip()
    if not stripped:
        return "empty"
    if len(stripped) < _LONG_ANSWER:
        match = _POISON_RE.search(stripped[:_POISON_HEAD])
        if match:
            return match.lastgroup
    if stripped.count("```") % 2 == 1:
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
    found = []
    for match in _SECRET_RE.finditer(text):
        kind = match.lastgroup or "secret"
        found.append(redact_secret(kind, match.group(0)))
        if len(found) >= 5:
            break
    return found
