"""History reads of the run diff (alerts.services.diff): the run's sightings with each
port's past, the hosts it covered, earlier coverage, the health of the run against its peers.
Bulk queries; nothing here writes."""

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Exists, OuterRef, Subquery, Value
from django.db.models.functions import Concat

from alerts import diff
from alerts.models import AlertEvent, EventKind
from alerts.services.events import chunks
from scanner.models import Host, Network, Port, PortObservation, RunState, ScanRun
from scanner.selectors import coverage_spans

# Healthy runs of the same policy that form the baseline of the health check.
BASELINE_RUNS = 7
# Separator for the previous fingerprint packed into one subquery column.
SEP = "\x1f"
FP_FIELDS = ("service", "product", "version")


def run_peers(run: ScanRun):
    """Runs comparable with this one: same policy; without a policy, same source and zone."""
    qs = ScanRun.objects.filter(state=RunState.FINISHED).exclude(pk=run.pk)
    if run.policy_id:
        return qs.filter(policy_id=run.policy_id)
    return qs.filter(policy__isnull=True, source=run.source, zone=run.zone)


def run_health_assess(*, run: ScanRun, at: datetime) -> bool:
    """Is this run degraded compared with the median of its peers' last healthy runs?"""
    baseline = list(
        run_peers(run)
        .filter(degraded=False, diffed_at__isnull=False, finished_at__lt=at)
        .order_by("-finished_at")
        .values_list("hosts_found", "ports_found")[:BASELINE_RUNS]
    )
    return diff.is_degraded(
        hosts_found=run.hosts_found,
        ports_found=run.ports_found,
        baseline=baseline,
        ratio=settings.PORTMON_DEGRADED_RATIO,
    )


@dataclass(frozen=True)
class HostRow:
    ip: str
    zone: str
    window_days: int | None
    covered: bool
    network_id: int | None
    network: str
    # The network's baseline is per host (a host outside every network has no other).
    per_host: bool


UNKNOWN_HOST = HostRow("", "", None, False, None, "", True)

HOST_FIELDS = (
    "id",
    "ip",
    "network__zone",
    "network__new_port_window_days",
    "network_id",
    "network__cidr",
    "network__baseline_scope",
)


def _host_row(row: tuple, *, covered: bool) -> tuple[int, HostRow]:
    hid, ip, zone, days, net_id, cidr, scope = row
    per_host = net_id is None or scope == Network.BaselineScope.HOST
    return hid, HostRow(ip, zone or "", days, covered, net_id, cidr or "", per_host)


def hosts_info(host_ids: Iterable[int]) -> dict[int, HostRow]:
    """{host_id: HostRow} of hosts the run saw but did not cover."""
    info = {}
    for chunk in chunks(sorted(set(host_ids))):
        for row in Host.objects.filter(id__in=chunk).values_list(*HOST_FIELDS):
            hid, host = _host_row(row, covered=False)
            info[hid] = host
    return info


def hosts_covered(coverage: diff.Coverage) -> dict[int, HostRow]:
    """Hosts inside the run's targets, as _host_info does."""
    if coverage.only_addresses:
        rows: list[tuple] = []
        ips = sorted(str(a) for a in coverage.addresses)
        for chunk in chunks(ips):
            rows.extend(Host.objects.filter(ip__in=chunk).values_list(*HOST_FIELDS))
    else:
        # CIDR targets: membership is tested in Python (IPs are stored as text).
        rows = [r for r in Host.objects.values_list(*HOST_FIELDS) if coverage.covers_ip(r[1])]
    for chunk in chunks(sorted(coverage.names)):
        rows.extend(Host.objects.filter(hostname__in=chunk).values_list(*HOST_FIELDS))
    return dict(_host_row(row, covered=True) for row in rows)


def same_port_of_run(model, run_id: int):
    return model.objects.filter(
        run_id=run_id, host_id=OuterRef("host_id"), proto=OuterRef("proto"), port=OuterRef("port")
    )


def run_sightings(run: ScanRun, at: datetime) -> list[tuple]:
    """This run's observations with the port's history, one query."""
    prior = PortObservation.objects.filter(
        host_id=OuterRef("host_id"),
        proto=OuterRef("proto"),
        port=OuterRef("port"),
        seen_at__lte=at,
    ).exclude(run_id=run.pk)
    prev_fp = (
        prior.filter(fingerprinted=True)
        .order_by("-seen_at")
        .annotate(fp=Concat("service", Value(SEP), "product", Value(SEP), "version"))
        .values("fp")[:1]
    )
    return list(
        PortObservation.objects.filter(run_id=run.pk)
        .annotate(
            prev_seen=Subquery(prior.order_by("-seen_at").values("seen_at")[:1]),
            prev_fp=Subquery(prev_fp),
        )
        .values_list(
            "host_id",
            "proto",
            "port",
            "fingerprinted",
            "service",
            "product",
            "version",
            "prev_seen",
            "prev_fp",
        )
    )


def ports_missed_before(run: ScanRun) -> dict[tuple, int]:
    """Ports this run saw that healthy runs had missed: {(host, proto, port): missed_runs}.

    A separate small query: most seen ports have 0, and a correlated lookup per seen
    port would cost a quarter of the history query.
    """
    rows = (
        Port.objects.filter(missed_runs__gt=0)
        .filter(Exists(same_port_of_run(PortObservation, run.pk)))
        .values_list("host_id", "proto", "port", "missed_runs")
    )
    return {(h, proto, port): missed for h, proto, port, missed in rows}


def spans_of_run(run: ScanRun, coverage: diff.Coverage, at: datetime) -> dict[int, list[diff.Span]]:
    """{network_id: what this run covered there, a span per protocol}; none without ports."""
    protos = [
        (proto, diff.port_ranges_union(coverage.ranges_of(proto))) for proto in ("tcp", "udp")
    ]
    protos = [(proto, ports) for proto, ports in protos if ports]
    if not protos:
        return {}
    named: list[str] = []
    for chunk in chunks(sorted(coverage.names)):
        named.extend(Host.objects.filter(hostname__in=chunk).values_list("ip", flat=True))
    spans = {}
    for net_id, cidr in Network.objects.values_list("id", "cidr"):
        addresses = diff.address_ranges(coverage, ipaddress.ip_network(cidr), named)
        if addresses:
            spans[net_id] = [diff.Span(at, addresses, ports, proto) for proto, ports in protos]
    return spans


def spans_before(network_ids: Iterable[int], at: datetime) -> dict[int, list[diff.Span]]:
    """Each network's coverage by healthy runs before `at`: history as of this run."""
    return {
        net_id: [
            diff.Span(t, diff.ranges_parse(a), diff.ranges_parse(p), proto)
            for t, a, p, proto in rows
        ]
        for net_id, rows in coverage_spans(network_ids=network_ids, before=at).items()
    }


def hosts_answered_before(host_ids: Iterable[int], run: ScanRun, at: datetime) -> set[int]:
    """Hosts with an observation by another run at or before `at`."""
    answered: set[int] = set()
    for chunk in chunks(sorted(set(host_ids))):
        answered.update(
            PortObservation.objects.filter(host_id__in=chunk, seen_at__lte=at)
            .exclude(run_id=run.pk)
            .values_list("host_id", flat=True)
            .distinct()
        )
    return answered


def closed_after_last_sighting(keys: dict[tuple, datetime | None]) -> set[tuple]:
    """Keys with a "closed" event raised (by a run) after the port's last sighting."""
    if not keys:
        return set()
    closed = set()
    host_ids = sorted({k[0] for k in keys})
    for chunk in chunks(host_ids):
        rows = AlertEvent.objects.filter(kind=EventKind.CLOSED, host_id__in=chunk).values_list(
            "host_id", "proto", "port", "run__finished_at"
        )
        for hid, proto, port, closed_at in rows:
            key = (hid, proto, port)
            if key in keys:
                last = keys[key]
                if last is None or (closed_at is not None and closed_at > last):
                    closed.add(key)
    return closed


def sighting_is_baseline(
    host: HostRow,
    port: int,
    proto: str = "tcp",
    *,
    at: datetime,
    window: timedelta,
    spans: dict[int, list[diff.Span]],
    answered_before: bool,
) -> bool:
    host_first = host.per_host and not answered_before
    if host.network_id is None or not host.ip:
        # Outside every network there is no coverage to remember: a host's first answer.
        return host_first
    first = diff.first_covered(
        spans.get(host.network_id, ()), int(ipaddress.ip_address(host.ip)), port, proto
    )
    return diff.is_baseline(first_covered=first, at=at, window=window, host_first=host_first)
