from django.db import migrations

from healing.policies import DEFAULT_POLICIES, ensure_default_policies


def create(apps, schema_editor):
    ensure_default_policies(apps.get_model("healing", "RepairPolicy"))


def remove(apps, schema_editor):
    apps.get_model("healing", "RepairPolicy").objects.filter(name__in=[d[1] for d in DEFAULT_POLICIES]).delete()


class Migration(migrations.Migration):
    dependencies = [("healing", "0001_initial")]
    operations = [migrations.RunPython(create, remove)]
