"""Roles are Django groups; permissions decide what each can do. Created by a migration, editable."""

ROLES: dict[str, list[str]] = {
    "viewer": ["view_cachetarget", "view_checkrun", "view_issue", "view_diagnosis", "view_repair", "view_repairpolicy", "view_metricsample"],
    "operator": ["request_repair", "change_issue"],
    "approver": ["approve_repair"],
    "admin": ["break_glass", "reset_breaker", "add_cachetarget", "change_cachetarget", "delete_cachetarget", "add_repairpolicy",
              "change_repairpolicy", "delete_repairpolicy", "add_changefreeze", "change_changefreeze", "view_changefreeze",
              "add_notificationroute", "change_notificationroute", "view_notificationroute"],
}
# each role has the rights of the roles it builds on (an approver can view; an admin can do everything)
INHERITS: dict[str, list[str]] = {"viewer": [], "operator": ["viewer"], "approver": ["viewer"], "admin": ["viewer", "operator", "approver"]}


def role_codenames(role: str) -> set[str]:
    wanted = set(ROLES[role])
    for parent in INHERITS[role]:
        wanted |= set(ROLES[parent])
    return wanted


def ensure_roles(group_model, permission_model) -> None:
    for role in ROLES:
        group, _ = group_model.objects.get_or_create(name=role)
        group.permissions.set(permission_model.objects.filter(content_type__app_label="healing", codename__in=role_codenames(role)))
