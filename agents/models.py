"""Host agents: report which process owns each listening port on an internal server."""

from django.db import models
from django.utils import timezone


class Agent(models.Model):
    """One enrolled agent. Its token is `<key_id>.<secret>`: the key id finds the row, the
    secret's SHA-256 is compared in constant time; the token itself is shown once."""

    name = models.CharField(max_length=100, unique=True)
    key_id = models.CharField(max_length=24, default="", unique=True)
    # Only a hash is stored; the token is shown once when the agent is added or rotated.
    token_hash = models.CharField(max_length=128)
    enabled = models.BooleanField(default=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    rotated_at = models.DateTimeField(null=True, blank=True)
    last_report_at = models.DateTimeField(null=True, blank=True)
    # Replay protection: a new report must carry a higher sequence than the last accepted.
    last_seq = models.BigIntegerField(default=0)
    # Digest of the last report's sockets, and when the inventory rows were last written:
    # an unchanged report within LAST_SEEN_STEP touches no inventory row.
    inventory_hash = models.CharField(max_length=32, blank=True)
    inventory_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class AgentHost(models.Model):
    """An address the agent was enrolled for (a server has an IPv4 and an IPv6 Host)."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="addresses")
    # One agent per address: two agents describing one host would fight over its inventory.
    host = models.OneToOneField("scanner.Host", on_delete=models.CASCADE, related_name="agent_host")

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.agent_id} -> {self.host_id}"


class AgentReport(models.Model):
    """One accepted report (its id makes a retried delivery a no-op)."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="reports")
    report_id = models.CharField(max_length=36)
    seq = models.BigIntegerField()
    collected_at = models.DateTimeField()
    received_at = models.DateTimeField(default=timezone.now)
    sockets = models.PositiveIntegerField(default=0)
    events = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-received_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["agent", "report_id"], name="uniq_agent_report_id")
        ]

    def __str__(self) -> str:
        return f"report {self.report_id} of agent {self.agent_id}"


class ProcessSocket(models.Model):
    """Inventory: one (host, proto, port, process identity) an agent reported. Identity is
    name + exe, not PID: a restart updates the row, a new owner gets a row of its own;
    rows are never deleted, so past owners of a port stay listed (gone_at set)."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="sockets")
    host = models.ForeignKey("scanner.Host", on_delete=models.CASCADE, related_name="sockets")
    proto = models.CharField(max_length=3)
    port = models.PositiveIntegerField()
    name = models.CharField(max_length=128)
    exe = models.CharField(max_length=512, blank=True)
    # The latest values seen for the identity.
    pid = models.PositiveIntegerField(null=True, blank=True)
    user = models.CharField(max_length=64, blank=True)
    cmdline = models.CharField(max_length=1024, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    addresses = models.JSONField(default=list)
    # A digest of the five fields above: a report compares it instead of reading them back.
    detail_hash = models.CharField(max_length=16, blank=True)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    # NULL while the agent reports it; set when a report no longer has it.
    gone_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["host_id", "proto", "port", "first_seen"]
        indexes = [
            models.Index(fields=["agent", "gone_at"]),
            models.Index(fields=["host", "proto", "port"]),
        ]

    def __str__(self) -> str:
        return f"{self.port}/{self.proto} {self.name}"

    @property
    def current(self) -> bool:
        return self.gone_at is None


class SocketChange(models.Model):
    """History: a socket appeared, went away or changed owner (what the diff saw)."""

    class Kind(models.TextChoices):
        APPEARED = "appeared", "appeared"
        GONE = "gone", "gone"
        OWNER_CHANGED = "owner_changed", "owner changed"

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="changes")
    host = models.ForeignKey("scanner.Host", on_delete=models.CASCADE, related_name="+")
    proto = models.CharField(max_length=3)
    port = models.PositiveIntegerField()
    kind = models.CharField(max_length=16, choices=Kind.choices)
    name = models.CharField(max_length=128, blank=True)
    exe = models.CharField(max_length=512, blank=True)
    old_name = models.CharField(max_length=128, blank=True)
    old_exe = models.CharField(max_length=512, blank=True)
    at = models.DateTimeField()

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["host", "proto", "port", "-at"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.port}/{self.proto} {self.name}"
