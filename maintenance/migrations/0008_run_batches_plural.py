from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("maintenance", "0007_findings_over_time"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="runbatch",
            options={
                "ordering": ["run", "partition", "number"],
                "verbose_name_plural": "run batches",
            },
        ),
    ]
