"""Give every character a stable external id (UUID), in three steps so existing rows
each get their own value before the column becomes unique."""

import uuid

from django.db import migrations, models


def fill_external_ids(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "UPDATE chronicles_character SET external_id = gen_random_uuid() "
            "WHERE external_id IS NULL"
        )
        return
    Character = apps.get_model("chronicles", "Character")
    missing = Character.objects.filter(external_id__isnull=True)
    while batch := list(missing.values_list("pk", flat=True)[:1000]):
        for pk in batch:
            Character.objects.filter(pk=pk).update(external_id=uuid.uuid4())


class Migration(migrations.Migration):
    dependencies = [("chronicles", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="character",
            name="external_id",
            field=models.UUIDField(editable=False, null=True),
        ),
        migrations.RunPython(fill_external_ids, migrations.RunPython.noop, elidable=True),
        migrations.AlterField(
            model_name="character",
            name="external_id",
            field=models.UUIDField(default=uuid.uuid4, editable=False, unique=True),
        ),
    ]
