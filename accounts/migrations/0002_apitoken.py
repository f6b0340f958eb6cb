"""ApiToken, moved from the api app with its table (api_apitoken): the model is state only,
no row is touched. Its content type is renamed api -> accounts, so the permissions on tokens
(and the groups and users granted them) follow the model; audit rows name it the new way."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import IntegrityError, migrations, models, transaction

MODEL = "apitoken"


def relabel(apps, schema_editor, old: str, new: str) -> None:
    """As Django renames a content type when a model is renamed: a stale row already under
    the new label wins (remove_stale_contenttypes deals with the other)."""
    from django.contrib.contenttypes.models import ContentType as CurrentContentType

    db = schema_editor.connection.alias
    ContentType = apps.get_model("contenttypes", "ContentType")
    row = ContentType.objects.using(db).filter(app_label=old, model=MODEL).first()
    if row is not None:
        row.app_label = new
        try:
            with transaction.atomic(using=db):
                row.save(using=db, update_fields=["app_label"])
        except IntegrityError:
            pass
        ContentType.objects.clear_cache()
        CurrentContentType.objects.clear_cache()
    AuditEntry = apps.get_model("audit", "AuditEntry")
    AuditEntry.objects.using(db).filter(object_type=f"{old}.{MODEL}").update(
        object_type=f"{new}.{MODEL}"
    )


def forwards(apps, schema_editor):
    relabel(apps, schema_editor, "api", "accounts")


def backwards(apps, schema_editor):
    relabel(apps, schema_editor, "accounts", "api")


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_visit"),
        ("api", "0003_apitoken_to_accounts"),
        ("audit", "0001_initial"),
        ("contenttypes", "0002_remove_content_type_name"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name="ApiToken",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        (
                            "name",
                            models.CharField(blank=True, help_text="what uses it", max_length=100),
                        ),
                        ("key_id", models.CharField(max_length=24, unique=True)),
                        ("token_hash", models.CharField(max_length=64)),
                        ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                        ("expires_at", models.DateTimeField(blank=True, null=True)),
                        ("revoked_at", models.DateTimeField(blank=True, null=True)),
                        ("last_used_at", models.DateTimeField(blank=True, null=True)),
                        (
                            "user",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="api_tokens",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                    ],
                    options={
                        "verbose_name": "API token",
                        "ordering": ["-created_at", "-id"],
                        "db_table": "api_apitoken",
                    },
                )
            ],
        ),
        migrations.RunPython(forwards, backwards),
    ]
