"""The default approval policies of DESIGN.md §6, created by a migration and editable in the admin."""

DEFAULT_POLICIES = [
    # (order, name, risks, decision, approvers)
    (10, "low risk: auto-approve", ["low"], "auto", 0),
    (20, "medium risk: one approver", ["medium"], "approvers", 1),
    (30, "high risk: one approver other than the requester", ["high"], "approvers", 1),
    (40, "critical risk: two approvers", ["critical"], "approvers", 2),
]


def ensure_default_policies(policy_model) -> None:
    for order, name, risks, decision, approvers in DEFAULT_POLICIES:
        policy_model.objects.get_or_create(
            name=name, defaults={"order": order, "match_risks": risks, "decision": decision, "approvers_required": approvers}
        )
