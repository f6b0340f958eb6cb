"""Alert events (with notes and audit), white/black-list rules and the high-risk port list."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from alerts.kinds import EventKind
from alerts.rules import (
    MAX_LEN,
    RuleAction,
    RuleError,
    RuleProto,
    RuleZone,
    rule_spec_validate,
    text_error,
)
from alerts.severity import Severity


class EventState(models.TextChoices):
    NEW = "new", "new"
    ACKNOWLEDGED = "acknowledged", "acknowledged"
    IGNORED = "ignored", "ignored"
    FIXED = "fixed", "fixed"
    REOPENED = "reopened", "reopened"


# An event in one of these states is "open": at most one per (host, proto, port, kind).
OPEN_STATES = frozenset({EventState.NEW, EventState.ACKNOWLEDGED, EventState.REOPENED})


def open_key_for(host_id: int, proto: str, port: int, kind: str, subkey: str = "") -> str:
    """At most one open event per key. subkey splits a kind further on one port (a PoC
    finding per check): it is kept in the event's detail["subkey"]."""
    key = f"{host_id}/{proto}/{port}/{kind}"
    return f"{key}/{subkey}"[:100] if subkey else key


def open_key_of(event: "AlertEvent") -> str:
    subkey = event.detail.get("subkey", "") if isinstance(event.detail, dict) else ""
    return open_key_for(event.host_id, event.proto, event.port, event.kind, subkey)


class AlertEvent(models.Model):
    """Something the team should know about one (host, proto, port)."""

    host = models.ForeignKey("scanner.Host", on_delete=models.CASCADE, related_name="events")
    proto = models.CharField(max_length=3, default="tcp")
    port = models.PositiveIntegerField()
    kind = models.CharField(max_length=32, choices=EventKind.choices)
    state = models.CharField(max_length=16, choices=EventState.choices, default=EventState.NEW)
    run = models.ForeignKey(
        "scanner.ScanRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="events"
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(default=timezone.now)
    # When it was last set to fixed/ignored: a fixed event reopens if seen after this.
    resolved_at = models.DateTimeField(null=True, blank=True)
    # An ignored event whose risk was accepted until then: it reopens afterwards
    # (alerts.services.triage.acceptances_lapse).
    accepted_until = models.DateTimeField(null=True, blank=True)
    # Old/new fingerprint, zone, whether the port is high-risk, why it fired.
    detail = models.JSONField(default=dict, blank=True)
    # An allow rule matched: kept for the record (and the digest's rule hits), not alerted.
    suppressed = models.BooleanField(default=False)
    rule = models.ForeignKey(
        "alerts.Rule", null=True, blank=True, on_delete=models.SET_NULL, related_name="events"
    )
    # High-risk port or deny-rule match: send at once, not only in the digest.
    immediate = models.BooleanField(default=False)
    # "host/proto/port/kind" while open, NULL otherwise: a unique column that allows any
    # number of NULLs enforces "one open event per key" on MariaDB and SQLite alike
    # (a partial unique index would not work on MariaDB).
    open_key = models.CharField(max_length=100, null=True, blank=True, unique=True)
    # Derived from the kind when the event is raised (alerts.kinds.severity_for).
    severity = models.PositiveSmallIntegerField(choices=Severity.choices, default=Severity.MEDIUM)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["severity", "-created_at"], name="alertevent_severity_idx"),
            models.Index(fields=["state", "-created_at"]),
            models.Index(fields=["kind", "-created_at"]),
            models.Index(fields=["host", "proto", "port"]),
            # The overview's ageing table: open events per severity, their oldest and how
            # many are past target, read from this index alone (100,000 events: 0.9 s -> 0.2
            # s on a loaded machine, bench/dashboard_bench.py).
            models.Index(
                fields=["state", "suppressed", "severity", "created_at"],
                name="alertevent_open_ageing_idx",
            ),
            models.Index(fields=["accepted_until"], name="alertevent_accepted_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.host_id}:{self.port}/{self.proto} ({self.state})"

    def get_absolute_url(self) -> str:
        # The dashboard's event page (served by a later feature; a path, not a full URL).
        return f"/events/{self.pk}/"

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES


class EventNote(models.Model):
    event = models.ForeignKey(AlertEvent, on_delete=models.CASCADE, related_name="notes")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    text = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"note on event {self.event_id}"


class EventAudit(models.Model):
    """One row per state change: who (None: the system), from what, to what, when."""

    event = models.ForeignKey(AlertEvent, on_delete=models.CASCADE, related_name="audit")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    action = models.CharField(max_length=32)
    from_state = models.CharField(max_length=16, blank=True)
    to_state = models.CharField(max_length=16, blank=True)
    at = models.DateTimeField(default=timezone.now)
    comment = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"event {self.event_id}: {self.from_state} -> {self.to_state}"


# Rule columns that Portmon keeps (read-only in the admin and the API); the rest are the
# fields a person sets (alerts.rule_files.RULE_FIELDS).
RULE_KEPT_FIELDS = ("hit_count", "last_hit_at", "created_at")


class Rule(models.Model):
    """A white/black-list entry; blank or null fields match anything. Its fields are
    defined in alerts.rules (choices, sizes) and alerts.rule_files.RuleEntry."""

    action = models.CharField(max_length=8, choices=RuleAction.choices)
    ip_cidr = models.CharField(
        max_length=MAX_LEN["ip_cidr"], blank=True, help_text="IP or CIDR; blank: any"
    )
    process = models.CharField(
        max_length=MAX_LEN["process"],
        blank=True,
        help_text="process name glob (host agents); blank: any",
    )
    port_lo = models.PositiveIntegerField(null=True, blank=True, help_text="blank: any port")
    port_hi = models.PositiveIntegerField(null=True, blank=True, help_text="blank: same as lo")
    proto = models.CharField(max_length=3, choices=RuleProto.choices, default=RuleProto.ANY)
    zone = models.CharField(max_length=16, choices=RuleZone.choices, blank=True, default="")
    reason = models.CharField(max_length=MAX_LEN["reason"])
    owner = models.CharField(max_length=MAX_LEN["owner"], help_text="who answers for this rule")
    expires_at = models.DateTimeField(null=True, blank=True)
    enabled = models.BooleanField(default=True)
    hit_count = models.PositiveIntegerField(default=0)
    last_hit_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.action} #{self.pk}: {self.reason}"

    def clean(self) -> None:
        # The same text rule as rule files: what the API or admin saves, export writes and
        # import must read back.
        bad = {
            name: f"{name}: {text_error(getattr(self, name))}"
            for name in ("ip_cidr", "process", "reason", "owner")
            if text_error(getattr(self, name))
        }
        if bad:
            raise ValidationError(bad)
        try:
            rule_spec_validate(
                ip_cidr=self.ip_cidr,
                port_lo=self.port_lo,
                port_hi=self.port_hi,
                process=self.process,
            )
        except RuleError as exc:
            raise ValidationError(str(exc)) from exc


class HighRiskPort(models.Model):
    """Ports that alert at once when newly open (editable in admin)."""

    port = models.PositiveIntegerField()
    proto = models.CharField(max_length=3, default="tcp", choices=RuleProto.choices[1:])
    reason = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["proto", "port"]
        constraints = [
            models.UniqueConstraint(fields=["port", "proto"], name="uniq_high_risk_port")
        ]

    def __str__(self) -> str:
        return f"{self.port}/{self.proto}"
