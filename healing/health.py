"""A target's health as one number (0–100), for the overview and its trend."""

from __future__ import annotations

from collections.abc import Iterable

PENALTY = {"critical": 40, "high": 20, "medium": 10, "low": 3, "info": 0}


def health_score(severities: Iterable[str], *, unreachable: bool = False, storm: bool = False, breaker: bool = False) -> int:
    """100 for a store with no open issue; each open issue costs by severity; an unreachable store is 0."""
    if unreachable:
        return 0
    score = 100 - sum(PENALTY.get(s, 0) for s in severities)
    if storm:
        score = min(score, 20)
    if breaker:
        score = min(score, 50)
    return max(0, min(100, score))
