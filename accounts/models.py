"""Per-user state: when they logged in before this visit ("since your last visit"), and
API tokens: stored hashed, shown once, with an expiry and a revocation."""

from django.conf import settings
from django.db import models
from django.utils import timezone


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


class ApiToken(models.Model):
    """A token is `<key_id>.<secret>`: the key id finds the row, only the secret's SHA-256
    is kept (as for agents); the token itself is shown once, when it is issued."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, blank=True, help_text="what uses it")
    key_id = models.CharField(max_length=24, unique=True)
    token_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)
    # NULL: never expires (only when asked for: `api_token create --days 0`).
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # Moves in steps of an hour (accounts.selectors.USED_STEP), not on every request.
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        # Made by the api app's migrations (the model moved here, its table did not).
        db_table = "api_apitoken"
        ordering = ["-created_at", "-id"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.key_id} ({self.user}{', ' + self.name if self.name else ''})"

    def state(self, now=None) -> str:
        now = now or timezone.now()
        if self.revoked_at:
            return "revoked"
        if self.expires_at and self.expires_at <= now:
            return "expired"
        return "active"
