from django.db import migrations


def create(apps, schema_editor):
    apps.get_model("compliance", "ChainHead").objects.get_or_create(pk=1, defaults={"seq": 0, "hash": "0" * 64})


class Migration(migrations.Migration):
    dependencies = [("compliance", "0001_initial")]
    operations = [migrations.RunPython(create, migrations.RunPython.noop)]
