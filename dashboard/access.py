"""The one access helper: every view asks it, never `user.is_staff` inline."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied

PERMS = {
    "view": None,  # any signed-in user
    "approve": "healing.approve_repair",
    "operate": "healing.request_repair",
}


def can(user, what: str) -> bool:
    if not user.is_authenticated:
        return False
    perm = PERMS[what]
    return perm is None or user.has_perm(perm)


def require(user, what: str) -> None:
    if not can(user, what):
        raise PermissionDenied(f"your role does not allow this ({what})")
