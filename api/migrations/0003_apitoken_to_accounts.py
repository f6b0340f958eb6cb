from django.db import migrations


class Migration(migrations.Migration):
    """ApiToken moved to the accounts app; its table (api_apitoken) stays where it is."""

    dependencies = [("api", "0002_hash_drf_tokens")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="ApiToken")], database_operations=[]
        )
    ]
