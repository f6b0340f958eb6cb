from django.db import migrations

from accounts.roles import role_groups_create, role_groups_delete


def create(apps, schema_editor):
    role_groups_create(apps.get_model("auth", "Group"))


def remove(apps, schema_editor):
    role_groups_delete(apps.get_model("auth", "Group"))


class Migration(migrations.Migration):
    dependencies = [("auth", "0012_alter_user_first_name_max_length")]

    operations = [migrations.RunPython(create, remove)]
