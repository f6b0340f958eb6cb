"""DRF's plaintext tokens (rest_framework.authtoken) become hashed ApiTokens: the same keys
keep working (accounts.selectors.LEGACY_KEY), and the plaintext rows are deleted."""

import hashlib

from django.db import migrations
from django.utils import timezone


def hash_tokens(apps, schema_editor):
    Token = apps.get_model("authtoken", "Token")
    ApiToken = apps.get_model("api", "ApiToken")
    for token in Token.objects.all():
        ApiToken.objects.create(
            user_id=token.user_id,
            name="moved from the plaintext token table",
            key_id=f"legacy-{token.key[:16]}",
            token_hash=hashlib.sha256(token.key.encode()).hexdigest(),
            created_at=token.created or timezone.now(),
        )
    Token.objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [
        ("api", "0001_api_tokens"),
        ("authtoken", "0004_alter_tokenproxy_options"),
    ]

    operations = [migrations.RunPython(hash_tokens, migrations.RunPython.noop)]
