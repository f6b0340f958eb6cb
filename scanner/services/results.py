"""Record what runs found: observations per run and the current state per port."""

import ipaddress
import itertools
from collections.abc import Callable, Iterable
from datetime import datetime

from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Greatest
from django.utils import timezone

from scanner.findings import Finding
from scanner.imports import ImportReport
from scanner.models import (
    Host,
    HostFinding,
    PortObservation,
    RunState,
    ScanRun,
    StateTurn,
)
from scanner.scope import Scope, normalise_address
from scanner.services.scope import network_ids, scope_load
from scanner.signals import run_finished

# Rows per INSERT/UPDATE batch: large enough to keep round trips few on MariaDB.
BATCH_SIZE = 1000
FINGERPRINT_FIELDS = ("service", "product", "version", "extrainfo", "cpe")


def host_ip(ip: str) -> str:
    """The one text form of an address in Host.ip: IPv4-mapped IPv6 as IPv4, IPv6 compressed.

    The database field would store '::ffff:7f00:2' as '::ffff:127.0.0.2': keys built any
    other way miss the rows read back.
    """
    return str(normalise_address(ipaddress.ip_address(ip)))


def hosts_ensure(*, ips: Iterable[str], seen_at: datetime, scope: Scope | None = None) -> dict:
    """Return {ip: Host} keyed by host_ip(), creating missing hosts (with their network)."""
    ips = {host_ip(ip) for ip in ips}
    if not ips:
        return {}
    existing = {h.ip: h for h in Host.objects.filter(ip__in=ips)}
    missing = ips - existing.keys()
    if missing:
        scope = scope or scope_load()
        net_ids = network_ids()
        new_hosts = []
        for ip in missing:
            network = scope.network_of(ipaddress.ip_address(ip))
            new_hosts.append(
                Host(
                    ip=ip,
                    network_id=net_ids.get(str(network)) if network else None,
                    first_seen=seen_at,
                    last_seen=seen_at,
                )
            )
        Host.objects.bulk_create(new_hosts, batch_size=BATCH_SIZE, ignore_conflicts=True)
        existing = {h.ip: h for h in Host.objects.filter(ip__in=ips)}
    return existing


def observations_record(*, run_id: int, findings: Iterable[Finding], seen_at: datetime) -> int:
    """Insert one observation per finding; a repeat (redelivered shard) is a no-op.

    Returns the number of distinct findings passed in.
    """
    unique = {f.key: f for f in findings}
    if not unique:
        return 0
    hosts = hosts_ensure(ips={ip for ip, _, _ in unique}, seen_at=seen_at)
    rows = [
        PortObservation(
            run_id=run_id,
            host=hosts[host_ip(f.ip)],
            proto=f.proto,
            port=f.port,
            seen_at=seen_at,
            fingerprinted=f.has_fingerprint,
            **{name: getattr(f, name) for name in FINGERPRINT_FIELDS},
        )
        for f in unique.values()
    ]
    PortObservation.objects.bulk_create(rows, batch_size=BATCH_SIZE, ignore_conflicts=True)
    return len(rows)


def host_answering_all_record(
    *, run_id: int, answering_all: dict[str, int], probed: int, at: datetime
) -> None:
    """Record hosts that answer on all ports, once per run, and drop their port rows.

    Their ports say nothing (scanner/synproxy.py): any observation of theirs this run
    recorded before the verdict (another shard's, a stream) goes, so that nothing
    fingerprints, records or diffs them one by one.
    """
    if not answering_all:
        return
    hosts = hosts_ensure(ips=answering_all, seen_at=at)
    with transaction.atomic():
        HostFinding.objects.bulk_create(
            [
                HostFinding(
                    run_id=run_id,
                    host=hosts[host_ip(ip)],
                    kind=HostFinding.Kind.ANSWERS_ALL_PORTS,
                    open_count=count,
                    probed=probed,
                    found_at=at,
                )
                for ip, count in answering_all.items()
            ],
            ignore_conflicts=True,
        )
        PortObservation.objects.filter(
            run_id=run_id, host_id__in=[h.pk for h in hosts.values()]
        ).delete()


STATE_TURN = "state"


def state_turn_take(*, run_id: int | None = None) -> None:
    """Wait for and hold the state turn until the caller's transaction ends (see StateTurn):
    every writer of current state takes it before its other writes, so none waits for
    another while holding rows that one needs.

    run_id: the run whose diff takes the turn (kept for the admin to see)."""
    StateTurn.objects.get_or_create(name=STATE_TURN)
    fields: dict[str, object] = {"updated_at": timezone.now()}
    if run_id is not None:
        fields["last_run_id"] = run_id
    StateTurn.objects.filter(name=STATE_TURN).update(**fields)


def run_counts_record(*, run: ScanRun) -> None:
    """What the run found, in numbers (the diff's health check compares them).

    Recording writes observations only: the current state of each port (Port) is advanced
    by the run's diff, in run order (scanner.services.ports.ports_advance), so that a run
    recorded early never changes what an earlier run's diff reads.
    """
    observations = PortObservation.objects.filter(run=run)
    ScanRun.objects.filter(pk=run.pk).update(
        hosts_found=observations.values("host_id").distinct().count(),
        ports_found=observations.count(),
    )
    # When each host last answered: written by the recording (a diff locking host rows an
    # import inserts against deadlocked on MariaDB), under the state turn (callers take it
    # first thing in their transaction; taking it again is a no-op).
    state_turn_take()
    host_ids = list(observations.values_list("host_id", flat=True).distinct())
    seen_at = run.finished_at or run.created_at
    for start in range(0, len(host_ids), BATCH_SIZE):
        Host.objects.filter(id__in=host_ids[start : start + BATCH_SIZE]).update(
            last_seen=Greatest(F("last_seen"), Value(seen_at))
        )


def run_complete(*, run_id: int) -> bool:
    """Mark a run finished and count what it found: exactly once, whoever calls first.

    Returns False when another caller already completed it (a redelivered task).
    """
    now = timezone.now()
    with transaction.atomic():
        claimed = (
            ScanRun.objects.filter(pk=run_id)
            .exclude(state__in=[RunState.FINISHED, RunState.FAILED, RunState.CANCELLED])
            .update(state=RunState.FINISHED, finished_at=now)
        )
        if claimed != 1:
            return False
        state_turn_take()
        run = ScanRun.objects.get(pk=run_id)
        run_counts_record(run=run)
    run_finished.send(sender=ScanRun, run_id=run_id)
    return True


def run_import(
    *,
    findings: Iterable[Finding],
    at: datetime,
    targets: str = "",
    ports: str = "1-65535",
    zone: str = "internal",
    policy_id: int | None = None,
    report: ImportReport | None = None,
    coverage: Callable[[], tuple[str, str]] | None = None,
    probes_allowed: bool = False,
    at_from_file: bool = False,
    source_name: str = "",
) -> ScanRun:
    """Record results from elsewhere (nmap XML, masscan JSON, tests) as a finished run.

    `findings` may be a stream: it is consumed once, in batches of BATCH_SIZE. Everything is
    one transaction, so a stream that fails half-way (a broken file) leaves nothing behind.
    A `report` filled in while the stream is read decides the zone and whether the run is
    degraded: a truncated file is a degraded run, which never closes ports. `coverage`,
    called once the stream is read, returns the (targets, ports) the file covered (some of
    it, such as nmap's down hosts, is only known at the end); it may raise to refuse it.
    An import is offline: PoC checks probe what it found only with `probes_allowed`.
    at_from_file: the run is dated by the file (`report.started` once the stream is read:
    masscan's earliest timestamp may come last), `at` being the time read so far.
    """
    with transaction.atomic():
        # First: a diff running meanwhile finishes before this writes anything (it may lock
        # the rows this inserts against), and none starts until this commits.
        state_turn_take()
        run = ScanRun.objects.create(
            source=ScanRun.Source.IMPORT,
            source_name=source_name[:255],
            policy_id=policy_id,
            targets=targets,
            zone=zone,
            state=RunState.FINGERPRINTING,
            created_at=at,
            started_at=at,
            probes_allowed=probes_allowed,
        )
        ips: set[str] = set()
        stream = iter(findings)
        while batch := list(itertools.islice(stream, BATCH_SIZE)):
            observations_record(run_id=run.id, findings=batch, seen_at=at)
            ips.update(f.ip for f in batch)
        if at_from_file and report is not None and report.started and report.started != at:
            at = report.started
            PortObservation.objects.filter(run=run).update(seen_at=at)
            run.created_at = run.started_at = at
        if report is not None and len(report.zones) == 1:
            zone = next(iter(report.zones))
        udp_ports = ""
        if coverage is not None:
            covered = coverage()
            targets, ports = covered
            udp_ports = getattr(covered, "udp_ports", "")
        run.targets = targets or ",".join(sorted(ips, key=_ip_order))
        run.ports = ports
        run.udp_ports = udp_ports
        run.zone = zone
        run.degraded = bool(report and report.truncated)
        run.error = report.error if report else ""
        # The run's time is the scan's time, not the import's: history back-fills stay in order.
        run.finished_at = at
        run.state = RunState.FINISHED
        run.save(
            update_fields=[
                *("targets", "ports", "udp_ports", "zone", "degraded", "error", "state"),
                *("created_at", "started_at", "finished_at"),
            ]
        )
        run_counts_record(run=run)
    run_finished.send(sender=ScanRun, run_id=run.id)
    run.refresh_from_db()
    return run


def _ip_order(ip: str) -> tuple[int, int]:
    # Numeric, IPv4 first: mixed IPv4/IPv6 addresses do not compare as ipaddress objects.
    address = ipaddress.ip_address(ip)
    return (address.version, int(address))
