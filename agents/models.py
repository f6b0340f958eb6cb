"""Host agents: report which process owns each listening port on an internal server."""

from django.db import models
from django.utils import timezone


class Agent(models.Model):
    host = models.OneToOneField("scanner.Host", on_delete=models.CASCADE, related_name="agent")
    name = models.CharField(max_length=100, unique=True)
    # Only a hash is stored; the token is shown once when the agent is registered.
    token_hash = models.CharField(max_length=128)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_report_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
