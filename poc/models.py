"""PoC check runs (queued, claimed, done) and their results, with history per
(host, proto, port, check)."""

from django.db import models
from django.utils import timezone


class PocState(models.TextChoices):
    PENDING = "pending", "pending"
    RUNNING = "running", "running"
    DONE = "done", "done"
    FAILED = "failed", "failed"  # no verdict (unreachable, timed out, attempts used up)
    SKIPPED = "skipped", "skipped"  # not run: the target left scope after it was queued


class PocReason(models.TextChoices):
    CHAIN = "chain", "chained from an event"
    RECHECK = "recheck", "daily re-check of a finding"
    MANUAL = "manual", "manual run"
    COVER = "cover", "first check of an exposure a scan found"


ACTIVE_STATES = (PocState.PENDING, PocState.RUNNING)


def active_key_for(host_id: int, proto: str, port: int, check: str) -> str:
    return f"{host_id}/{proto}/{port}/{check}"


class PocCheck(models.Model):
    """One run of one check against one (host, proto, port): queued, claimed, finished."""

    host = models.ForeignKey("scanner.Host", on_delete=models.CASCADE, related_name="poc_checks")
    proto = models.CharField(max_length=3, default="tcp")
    port = models.PositiveIntegerField()
    check_name = models.CharField(max_length=48)
    reason = models.CharField(max_length=16, choices=PocReason.choices)
    # The event that chained this run (new port, high risk...), or the finding re-checked.
    event = models.ForeignKey(
        "alerts.AlertEvent", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    state = models.CharField(max_length=16, choices=PocState.choices, default=PocState.PENDING)
    # "host/proto/port/check" while pending or running, NULL after: a unique column that
    # allows many NULLs keeps one queued run per (port, check) on MariaDB and SQLite alike.
    active_key = models.CharField(max_length=100, null=True, blank=True, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    queued_at = models.DateTimeField(null=True, blank=True)
    # The task holding the run (its id) and its last heartbeat, as fingerprint claims.
    claim = models.CharField(max_length=32, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["host", "proto", "port", "check_name", "-finished_at"]),
            models.Index(fields=["state", "claimed_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.check_name} on {self.host_id}:{self.port}/{self.proto} ({self.state})"


class PocResult(models.Model):
    """A verdict: vulnerable or not, with its evidence; the history of a (port, check)."""

    run = models.OneToOneField(PocCheck, on_delete=models.CASCADE, related_name="result")
    host = models.ForeignKey("scanner.Host", on_delete=models.CASCADE, related_name="poc_results")
    proto = models.CharField(max_length=3, default="tcp")
    port = models.PositiveIntegerField()
    check_name = models.CharField(max_length=48)
    vulnerable = models.BooleanField()
    severity = models.CharField(max_length=16)
    title = models.CharField(max_length=200)
    evidence = models.TextField(blank=True)
    checked_at = models.DateTimeField(default=timezone.now)
    # The poc_finding event this result raised, reopened or fixed (if any).
    event = models.ForeignKey(
        "alerts.AlertEvent", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-checked_at", "-id"]
        indexes = [models.Index(fields=["host", "proto", "port", "check_name", "-checked_at"])]

    def __str__(self) -> str:
        verdict = "vulnerable" if self.vulnerable else "not vulnerable"
        return f"{self.check_name} on {self.host_id}:{self.port}/{self.proto}: {verdict}"
