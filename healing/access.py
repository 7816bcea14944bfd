"""The one access helper. Services, views, the API and the command line all ask it."""

from __future__ import annotations

from typing import Any

PERMISSIONS = {
    "view": "healing.view_repair",
    "operate": "healing.request_repair",
    "approve": "healing.approve_repair",
    "break_glass": "healing.break_glass",
    "reset_breaker": "healing.reset_breaker",
    "admin": "healing.change_cachetarget",
}

REFUSALS = {
    "view": "you need the viewer role (or higher) to see this",
    "operate": "you are not allowed to do this: the operator role is required",
    "approve": "you are not allowed to approve or reject repairs: the approver role is required",
    "break_glass": "only admins may break the glass (run a repair during a change freeze)",
    "reset_breaker": "only admins may reset a circuit breaker",
    "admin": "only admins may do this",
}


class AccessDenied(Exception):
    """The actor's role does not allow the action; the message says which role would."""


def can(user: Any, what: str) -> bool:
    return bool(user is not None and getattr(user, "is_authenticated", False) and getattr(user, "is_active", False) and user.has_perm(PERMISSIONS[what]))


def require(user: Any, what: str) -> None:
    if not can(user, what):
        raise AccessDenied(REFUSALS[what])
