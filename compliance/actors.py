"""Who acted: a user, a policy at a version, or the system itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from compliance.models import ActorKind


@dataclass(frozen=True)
class Actor:
    kind: str
    id: str = ""
    label: str = ""
    version: int | None = None

    @classmethod
    def system(cls, component: str = "scheduler") -> Actor:
        return cls(ActorKind.SYSTEM, component, f"system:{component}")

    @classmethod
    def policy(cls, policy_id: int | str, name: str, version: int) -> Actor:
        return cls(ActorKind.POLICY, str(policy_id), f"policy:{name}", version)

    @classmethod
    def of(cls, who: Any) -> Actor:
        """Accept an Actor, a Django user, or None (the system)."""
        if who is None:
            return cls.system()
        if isinstance(who, Actor):
            return who
        if getattr(who, "is_authenticated", False):
            return cls(ActorKind.USER, str(who.pk), who.get_username())
        raise TypeError(f"cannot audit an actor of type {type(who).__name__}")
