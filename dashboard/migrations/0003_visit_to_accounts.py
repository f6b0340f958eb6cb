from django.db import migrations


class Migration(migrations.Migration):
    """Visit moved to the accounts app; its table (dashboard_visit) stays where it is."""

    dependencies = [("dashboard", "0002_visit")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="Visit")], database_operations=[]
        )
    ]
