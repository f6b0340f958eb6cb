from django.db import migrations, models

from alerts.kinds import KIND_SEVERITY, severity_for


def backfill(apps, schema_editor):
    AlertEvent = apps.get_model("alerts", "AlertEvent")
    for kind, severity in KIND_SEVERITY.items():
        AlertEvent.objects.filter(kind=kind).update(severity=int(severity))
    # A PoC finding carries its check's own severity in detail.
    for event in AlertEvent.objects.filter(kind="poc_finding").only("pk", "detail").iterator():
        AlertEvent.objects.filter(pk=event.pk).update(
            severity=severity_for("poc_finding", event.detail)
        )


class Migration(migrations.Migration):
    dependencies = [("alerts", "0002_seed_high_risk_ports")]

    operations = [
        migrations.AddField(
            model_name="alertevent",
            name="severity",
            field=models.PositiveSmallIntegerField(
                choices=[(10, "low"), (20, "medium"), (30, "high"), (40, "critical")], default=20
            ),
        ),
        migrations.AddIndex(
            model_name="alertevent",
            index=models.Index(fields=["severity", "-created_at"], name="alertevent_severity_idx"),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
