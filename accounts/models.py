"""Per-user state: when they logged in before this visit ("since your last visit")."""

from django.conf import settings
from django.db import models


class Visit(models.Model):
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="portmon_visit"
    )
    # The login before the current one: "since your last visit" starts here.
    previous_login = models.DateTimeField(null=True, blank=True)
    current_login = models.DateTimeField(null=True, blank=True)

    class Meta:
        # Made by the dashboard app's migrations (the model moved here, its table did not).
        db_table = "dashboard_visit"

    def __str__(self) -> str:
        return f"visits of {self.user_id}"
