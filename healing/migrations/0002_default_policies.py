from django.db import migrations

DEFAULTS = [
    # (order, name, risks, decision, approvers)
    (10, "low risk: auto-approve", ["low"], "auto", 0),
    (20, "medium risk: one approver", ["medium"], "approvers", 1),
    (30, "high risk: one approver other than the requester", ["high"], "approvers", 1),
    (40, "critical risk: two approvers", ["critical"], "approvers", 2),
]


def create(apps, schema_editor):
    RepairPolicy = apps.get_model("healing", "RepairPolicy")
    for order, name, risks, decision, approvers in DEFAULTS:
        RepairPolicy.objects.get_or_create(
            name=name, defaults={"order": order, "match_risks": risks, "decision": decision, "approvers_required": approvers}
        )


def remove(apps, schema_editor):
    apps.get_model("healing", "RepairPolicy").objects.filter(name__in=[d[1] for d in DEFAULTS]).delete()


class Migration(migrations.Migration):
    dependencies = [("healing", "0001_initial")]
    operations = [migrations.RunPython(create, remove)]
