"""Create the first admin account if there is none, and say how to log in."""

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from portmon.env import env_str


class Command(BaseCommand):
    help = "Create an admin account (PORTMON_ADMIN_USER / PORTMON_ADMIN_PASSWORD, or generated)."

    def handle(self, *args, **options):
        User = get_user_model()
        username = env_str("PORTMON_ADMIN_USER", "admin")
        password = env_str("PORTMON_ADMIN_PASSWORD")
        saved = settings.PORTMON_DATA_DIR / "admin_password"
        if User.objects.filter(username=username).exists():
            if password:
                user = User.objects.get(username=username)
                user.set_password(password)
                user.save(update_fields=["password"])
            hint = f" (password in {saved})" if saved.exists() and not password else ""
            self.stdout.write(f"admin account: {username}{hint}")
            return
        generated = not password
        if generated:
            password = secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email="", password=password)
        if generated:
            saved.write_text(password + "\n")
            saved.chmod(0o600)
        self.stdout.write(f"created admin account: {username} / {password}")
