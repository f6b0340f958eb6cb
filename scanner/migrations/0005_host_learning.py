from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("scanner", "0004_coverage_baseline"),
    ]

    operations = [
        migrations.AddField(
            model_name="host",
            name="learning_ports",
            field=models.TextField(blank=True, default=""),
        ),
        migrations.AddField(
            model_name="host",
            name="learning_until",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
