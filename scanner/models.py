"""Scope, hosts, scan policies, runs, shards and what they found."""

from collections.abc import Callable

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from scanner.scope import ScopeError, exclusion_check, network_check
from scanner.targets import UDP_DEFAULT_PORTS


class Zone(models.TextChoices):
    INTERNAL = "internal", "internal"
    EXTERNAL = "external", "external"


class Proto(models.TextChoices):
    TCP = "tcp", "tcp"
    UDP = "udp", "udp"


class Network(models.Model):
    """A CIDR in scope: only addresses inside a network (and outside exclusions) are scanned."""

    cidr = models.CharField(max_length=49, unique=True)
    zone = models.CharField(max_length=16, choices=Zone.choices, default=Zone.INTERNAL)
    owner_email = models.EmailField(blank=True)
    description = models.CharField(max_length=200, blank=True)
    # Days a non-high-risk port must go unseen before it counts as new (None: the default).
    new_port_window_days = models.PositiveSmallIntegerField(null=True, blank=True)

    class BaselineScope(models.TextChoices):
        NETWORK = "network", "network: new hosts after the first run alert"
        HOST = "host", "host: each host's first covering run is its baseline"

    # What a first healthy run records quietly (docs/alerts.md, "Baseline").
    baseline_scope = models.CharField(
        max_length=8, choices=BaselineScope.choices, default=BaselineScope.NETWORK
    )
    # When the first healthy run covering this network recorded its baseline.
    baselined_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["cidr"]

    def __str__(self) -> str:
        return f"{self.cidr} ({self.zone})"

    def clean(self) -> None:
        # The same check as `scope add` and the API (scanner.scope.network_check), so the
        # admin cannot store what they refuse.
        others = Network.objects.exclude(pk=self.pk).values_list("cidr", flat=True)
        try:
            self.cidr = str(network_check(self.cidr or "", existing=others))
        except ScopeError as exc:
            raise ValidationError({"cidr": str(exc)}) from None


class Exclusion(models.Model):
    """A CIDR inside a network that must never be scanned."""

    network = models.ForeignKey(Network, on_delete=models.CASCADE, related_name="exclusions")
    cidr = models.CharField(max_length=49, unique=True)
    reason = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["cidr"]

    def __str__(self) -> str:
        return self.cidr

    def clean(self) -> None:
        # As `scope exclude` checks it (scanner.scope.exclusion_check); the admin's inline
        # sets network to the (maybe unsaved) network being edited.
        network = getattr(self, "network", None)
        if network is None:
            return  # the network field reports its own error
        others = Exclusion.objects.exclude(pk=self.pk).values_list("cidr", flat=True)
        try:
            self.cidr = str(
                exclusion_check(self.cidr or "", parent=network.cidr or "", existing=others)
            )
        except ScopeError as exc:
            raise ValidationError({"cidr": str(exc)}) from None


class Host(models.Model):
    ip = models.GenericIPAddressField(unique=True)
    network = models.ForeignKey(
        Network, null=True, blank=True, on_delete=models.SET_NULL, related_name="hosts"
    )
    hostname = models.CharField(max_length=255, blank=True)
    first_seen = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["ip"]

    def __str__(self) -> str:
        return self.ip


class CoverageSpan(models.Model):
    """What one healthy run covered in one network: address ranges x port ranges.

    Coverage is what was scanned, not who answered: a port is baseline when no span before
    its run holds its address and port (alerts.diff.is_baseline), whether or not its host
    had answered. Compact: integer address ranges and port ranges as text ("3323068416-
    3323069439" is a /22); a run that adds nothing to earlier spans stores none.
    """

    network = models.ForeignKey(Network, on_delete=models.CASCADE, related_name="coverage")
    run = models.ForeignKey(
        "ScanRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="coverage"
    )
    at = models.DateTimeField()
    addresses = models.TextField()
    ports = models.TextField()
    # Coverage is per protocol: a TCP sweep says nothing about UDP ports, and vice versa.
    proto = models.CharField(max_length=3, choices=Proto.choices, default=Proto.TCP)

    class Meta:
        ordering = ["network", "at"]
        indexes = [models.Index(fields=["network", "at"])]

    def __str__(self) -> str:
        return f"{self.network_id}: {self.addresses} x {self.ports}/{self.proto} at {self.at}"


class Engine(models.TextChoices):
    AUTO = "auto", "auto"
    MASSCAN = "masscan", "masscan"
    CONNECT = "connect", "connect scanner"


class ScanPolicy(models.Model):
    """What to scan and when: becomes a django-celery-beat periodic task when scheduled."""

    name = models.CharField(max_length=100, unique=True)
    targets = models.TextField(help_text="IPs or CIDRs, comma or newline separated")
    ports = models.CharField(
        max_length=200, default="1-65535", blank=True, help_text="TCP ports; blank: none"
    )
    # UDP ports probed with protocol requests (scanner.engines.udp); blank: no UDP.
    udp_ports = models.CharField(
        max_length=200, default=UDP_DEFAULT_PORTS, blank=True, help_text="UDP ports; blank: none"
    )
    rate = models.PositiveIntegerField(default=100_000, help_text="masscan packets per second")
    engine = models.CharField(max_length=16, choices=Engine.choices, default=Engine.AUTO)
    zone = models.CharField(max_length=16, choices=Zone.choices, default=Zone.INTERNAL)
    fingerprint = models.BooleanField(default=True)
    schedule = models.CharField(
        max_length=100,
        blank=True,
        help_text="crontab 'minute hour day month weekday'; blank: manual only",
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "scan policies"

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from scanner.crontab import parse_crontab
        from scanner.targets import TargetError, parse_ports, parse_targets

        checks: list[tuple[str, Callable[[], object]]] = []
        if self.ports.strip() or not self.udp_ports.strip():
            checks.append(("ports", lambda: parse_ports(self.ports)))
        if self.udp_ports.strip():
            checks.append(("udp_ports", lambda: parse_ports(self.udp_ports)))
        checks.append(("targets", lambda: parse_targets(self.targets)))
        if self.schedule.strip():
            checks.append(("schedule", lambda: parse_crontab(self.schedule)))
        errors = {}
        for field, check in checks:
            try:
                check()
            except TargetError as exc:
                errors[field] = str(exc)
        if errors:
            raise ValidationError(errors)


class RunState(models.TextChoices):
    PENDING = "pending", "pending"
    SWEEPING = "sweeping", "sweeping"
    FINGERPRINTING = "fingerprinting", "fingerprinting"
    FINISHED = "finished", "finished"
    FAILED = "failed", "failed"
    CANCELLED = "cancelled", "cancelled"


class ScanRun(models.Model):
    class Source(models.TextChoices):
        SCAN = "scan", "scan"
        IMPORT = "import", "import"

    policy = models.ForeignKey(
        ScanPolicy, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs"
    )
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.SCAN)
    # An import's file name (no directory), for the run page: "imported from FILE".
    source_name = models.CharField(max_length=255, blank=True)
    targets = models.TextField()
    # Text: an imported nmap run covers its <scaninfo services=...> list (top-1000: ~4 KB).
    ports = models.TextField(default="1-65535", blank=True)
    # The UDP ports the run probed (blank: none); coverage and the diff are per protocol.
    udp_ports = models.TextField(default="", blank=True)
    rate = models.PositiveIntegerField(default=100_000)
    engine = models.CharField(max_length=16, choices=Engine.choices, default=Engine.AUTO)
    zone = models.CharField(max_length=16, choices=Zone.choices, default=Zone.INTERNAL)
    fingerprint = models.BooleanField(default=True)
    state = models.CharField(max_length=16, choices=RunState.choices, default=RunState.PENDING)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    # When the sweep ended and fingerprinting began (the reaper measures idleness from it).
    fingerprinting_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    hosts_found = models.PositiveIntegerField(default=0)
    ports_found = models.PositiveIntegerField(default=0)
    # Set by the diff: a run that found far fewer ports than usual is not trusted for "closed".
    degraded = models.BooleanField(default=False)
    diffed_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    # Set by the diff: [{"network_id", "network", "ports", "hosts"}] recorded as baseline.
    baseline = models.JSONField(default=list, blank=True)
    # PoC checks may probe what this run found. An import is offline: only with --poc.
    probes_allowed = models.BooleanField(default=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["policy", "state", "-created_at"])]

    def __str__(self) -> str:
        return f"run {self.pk} ({self.state})"


class ShardState(models.TextChoices):
    PENDING = "pending", "pending"
    RUNNING = "running", "running"
    DONE = "done", "done"
    FAILED = "failed", "failed"


class ScanShard(models.Model):
    """One Celery task's share of a run: a chunk of targets times a port range."""

    run = models.ForeignKey(ScanRun, on_delete=models.CASCADE, related_name="shards")
    index = models.PositiveIntegerField()
    targets = models.TextField()
    ports = models.CharField(max_length=200)
    # A shard sweeps one protocol: UDP shards are probed (and sized) on their own.
    proto = models.CharField(max_length=3, choices=Proto.choices, default=Proto.TCP)
    state = models.CharField(max_length=16, choices=ShardState.choices, default=ShardState.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    worker = models.CharField(max_length=200, blank=True)
    probes_total = models.BigIntegerField(default=0)
    probes_done = models.BigIntegerField(default=0)
    ports_found = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # When its message was last published: a pending shard never queued, or whose message
    # a broker restart lost, is queued again by the reaper.
    queued_at = models.DateTimeField(null=True, blank=True)
    # The delivery that holds the shard (the task id) and its liveness: a claim whose
    # heartbeat stopped belongs to a dead worker and is taken over.
    claim = models.CharField(max_length=64, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # The route plan (scanner.engines.routes.plan_json) of its first attempt: a retry whose
    # route differs fails the shard instead of sweeping by another way out.
    route_plan = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["run", "index"]
        constraints = [models.UniqueConstraint(fields=["run", "index"], name="uniq_shard_index")]

    def __str__(self) -> str:
        return f"run {self.run_id} shard {self.index} ({self.state})"

    @property
    def percent(self) -> float:
        return 100.0 * self.probes_done / self.probes_total if self.probes_total else 0.0


class HostFinding(models.Model):
    """Something a run found about a whole host rather than one port."""

    class Kind(models.TextChoices):
        # SYN-ACK on (nearly) every port probed: a SYN proxy, a tarpit or a middlebox. Its
        # ports are neither recorded nor fingerprinted one by one (scanner/synproxy.py).
        ANSWERS_ALL_PORTS = "answers_all_ports", "answers on all ports"

    run = models.ForeignKey(ScanRun, on_delete=models.CASCADE, related_name="host_findings")
    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="findings")
    kind = models.CharField(max_length=32, choices=Kind.choices)
    open_count = models.PositiveIntegerField(default=0)
    probed = models.PositiveIntegerField(default=0)
    found_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "host", "kind"], name="uniq_host_finding")
        ]

    def __str__(self) -> str:
        return f"{self.host_id} {self.kind} in run {self.run_id}"


class FingerprintFields(models.Model):
    """What nmap -sV said about a port."""

    service = models.CharField(max_length=100, blank=True)
    product = models.CharField(max_length=200, blank=True)
    version = models.CharField(max_length=100, blank=True)
    extrainfo = models.CharField(max_length=200, blank=True)
    cpe = models.CharField(max_length=500, blank=True)

    class Meta:
        abstract = True

    @property
    def fingerprint_label(self) -> str:
        return " ".join(p for p in (self.service, self.product, self.version) if p)


class PortObservation(FingerprintFields):
    """A port found open by one run (one row per run/host/proto/port)."""

    run = models.ForeignKey(ScanRun, on_delete=models.CASCADE, related_name="observations")
    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="observations")
    proto = models.CharField(max_length=3, choices=Proto.choices, default=Proto.TCP)
    port = models.PositiveIntegerField()
    seen_at = models.DateTimeField(default=timezone.now)
    fingerprinted = models.BooleanField(default=False)
    # Which fingerprint task has this port in hand, and its last heartbeat: a host's
    # streamed task and its end-of-sweep task must not both run nmap on the same ports,
    # and ports of a task that died are handed on once the heartbeat stops.
    fingerprint_claim = models.CharField(max_length=32, blank=True)
    fingerprint_claimed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["run", "host", "proto", "port"], name="uniq_observation_per_run"
            )
        ]
        indexes = [models.Index(fields=["host", "proto", "port", "seen_at"])]

    def __str__(self) -> str:
        return f"{self.host_id}:{self.port}/{self.proto} in run {self.run_id}"


class PortState(models.TextChoices):
    OPEN = "open", "open"
    CLOSED = "closed", "closed"


class Port(FingerprintFields):
    """Current state of one (host, proto, port): history summary and latest fingerprint."""

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="ports")
    proto = models.CharField(max_length=3, choices=Proto.choices, default=Proto.TCP)
    port = models.PositiveIntegerField()
    state = models.CharField(max_length=8, choices=PortState.choices, default=PortState.OPEN)
    first_seen = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)
    seen_count = models.PositiveIntegerField(default=1)
    # Consecutive healthy runs that covered this port and did not see it.
    missed_runs = models.PositiveSmallIntegerField(default=0)
    fingerprinted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["host", "proto", "port"]
        constraints = [
            models.UniqueConstraint(fields=["host", "proto", "port"], name="uniq_port_per_host")
        ]
        indexes = [
            models.Index(fields=["last_seen"]),
            models.Index(fields=["port", "proto"]),
            models.Index(fields=["state", "last_seen"]),
        ]

    def __str__(self) -> str:
        return f"{self.host_id}:{self.port}/{self.proto}"


class StateTurn(models.Model):
    """One row, locked by every writer of current state until it commits: each run's diff
    (which advances Port state, one run at a time, in the order runs finished) and each
    recording of a run (an import, a finished scan). Each takes it before its other
    writes, so none waits for another while holding rows that one needs (no deadlock on
    MariaDB). A conditional UPDATE of it takes MariaDB's row lock; SQLite's IMMEDIATE
    transactions lock the whole file anyway.
    """

    name = models.CharField(max_length=16, unique=True)
    last_run_id = models.BigIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"state turn {self.name} (last run {self.last_run_id})"
