"""Reads of the scanner's state for the CLI, the reaper, the dashboard and the API."""

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypedDict

from django.conf import settings
from django.core.cache import cache
from django.core.paginator import Page, Paginator
from django.db.models import Count, Max, OuterRef, Q, QuerySet, Subquery

from portmon.cachekeys import cache_key
from portmon.paging import RowsOf
from scanner.models import (
    CoverageSpan,
    Host,
    HostFinding,
    Network,
    Port,
    PortObservation,
    PortState,
    ScanPolicy,
    ScanRun,
    ScanShard,
    ShardState,
)
from scanner.services.liveness import stale_before
from scanner.targets import address_order


def run_hosts_unfingerprinted(*, run_id: int) -> list[str]:
    """Hosts with ports this run found open and has not fingerprinted yet."""
    answering_all = run_hosts_answering_all(run_id=run_id)
    return sorted(
        set(
            PortObservation.objects.filter(run_id=run_id, fingerprinted=False)
            .exclude(host_id__in=list(answering_all))
            .values_list("host__ip", flat=True)
        )
    )


def run_hosts_answering_all(*, run_id: int) -> dict[int, HostFinding]:
    """{host_id: finding} of the hosts that answered on all ports in this run."""
    return {
        f.host_id: f
        for f in HostFinding.objects.filter(
            run_id=run_id, kind=HostFinding.Kind.ANSWERS_ALL_PORTS
        ).select_related("host", "host__network")
    }


def run_progress(*, run_id: int) -> dict:
    """A selector for the CLI and dashboard: percent swept, ports found, state."""
    run = ScanRun.objects.get(pk=run_id)
    shards = list(
        ScanShard.objects.filter(run_id=run_id).values(
            "state", "probes_total", "probes_done", "ports_found"
        )
    )
    total = sum(s["probes_total"] for s in shards) or 1
    done = sum(
        s["probes_total"] if s["state"] == ShardState.DONE else s["probes_done"] for s in shards
    )
    return {
        "state": run.state,
        "percent": 100.0 * done / total,
        "shards": len(shards),
        "shards_done": sum(s["state"] == ShardState.DONE for s in shards),
        "shards_failed": sum(s["state"] == ShardState.FAILED for s in shards),
        "ports_found": PortObservation.objects.filter(run_id=run_id).count(),
        "fingerprinted": PortObservation.objects.filter(run_id=run_id, fingerprinted=True).count(),
        # Ports in a live fingerprint task's hands (its heartbeat writes them every 2 s).
        "in_nmap": PortObservation.objects.filter(
            run_id=run_id, fingerprinted=False, fingerprint_claimed_at__gte=stale_before()
        ).count(),
        # Ports nmap has named (a port that timed out is fingerprinted but unnamed).
        "named": PortObservation.objects.filter(run_id=run_id)
        .exclude(service="", product="")
        .count(),
        "error": run.error,
    }


def coverage_spans(
    *, network_ids: Iterable[int], before: datetime
) -> dict[int, list[tuple[datetime, str, str, str]]]:
    """{network_id: [(at, address ranges, port ranges, proto)]} of spans recorded before
    `before`."""
    spans: dict[int, list[tuple[datetime, str, str, str]]] = {}
    rows = CoverageSpan.objects.filter(network_id__in=sorted(network_ids), at__lt=before)
    fields = ("network_id", "at", "addresses", "ports", "proto")
    for net_id, at, addresses, ports, proto in rows.values_list(*fields):
        spans.setdefault(net_id, []).append((at, addresses, ports, proto))
    return spans


# --- Lists and pages (the dashboard, the API) -----------------------------------------


class NetworkExposure(TypedDict):
    network_id: int | None
    cidr: str | None
    zone: str
    open: int
    services: list[tuple[str, int]]
    other: int


class ScanOverview(TypedDict):
    open_ports: int
    hosts: int
    networks: int
    runs: Sequence[ScanRun]  # annotated with shard_count and shards_failed
    # (created_at, ports_found, degraded, series)
    finished_runs: list[tuple[datetime, int, bool, str]]
    exposure: list[NetworkExposure]


def scan_overview(*, runs: int = 10, finished: int = 30) -> ScanOverview:
    """Counts and recent runs for the home page; `finished_runs`: (created_at, ports_found,
    degraded, series) of the last finished runs, oldest first, `series` naming what the run
    scanned (its policy, or "ad hoc" / "imports"): one policy's runs are one line of a
    chart, never mixed with another's."""
    recent = list(
        ScanRun.objects.select_related("policy")
        .annotate(
            shard_count=Count("shards"),
            shards_failed=Count("shards", filter=Q(shards__state="failed")),
        )
        .order_by("-created_at", "-id")[:runs]
    )
    last = list(
        ScanRun.objects.filter(state="finished")
        .order_by("-created_at", "-id")
        .values_list("created_at", "ports_found", "degraded", "policy__name", "source")[:finished]
    )
    exposure = network_exposure()
    return {
        "open_ports": sum(n["open"] for n in exposure),
        "hosts": Host.objects.count(),
        "networks": Network.objects.count(),
        "runs": recent,
        "finished_runs": [
            (at, found, degraded, name or ("imports" if source == "import" else "ad hoc"))
            for at, found, degraded, name, source in reversed(last)
        ],
        "exposure": exposure,
    }


def network_exposure(*, services: int = 6) -> list[NetworkExposure]:
    """Open ports per network, by service, largest network first: [{"network_id", "cidr",
    "zone" (None for hosts outside every network), "open", "services": [(service, count)]
    the `services` largest, "other": ports of the rest}]. One grouped query over open
    ports, cached for PORTMON_OVERVIEW_CACHE_SECONDS under a key that changes when a run is
    recorded or diffed (what changes ports) or a network is added."""
    seconds = settings.PORTMON_OVERVIEW_CACHE_SECONDS
    key = ""
    if seconds:
        runs = ScanRun.objects.aggregate(
            n=Count("id"), last=Max("id"), diffed=Max("diffed_at"), done=Max("finished_at")
        )
        scope = Network.objects.aggregate(n=Count("id"), last=Max("id"))
        key = cache_key("scanner:exposure", *runs.values(), *scope.values(), services)
        cached = cache.get(key)
        if cached is not None:
            return cached
    grouped = (
        Port.objects.filter(state=PortState.OPEN)
        .order_by()
        .values_list("host__network_id", "service")
        .annotate(n=Count("id"))
    )
    per_net: dict[int | None, dict[str, int]] = {}
    for net_id, service, n in grouped:
        bucket = per_net.setdefault(net_id, {})
        name = service or "unknown"
        bucket[name] = bucket.get(name, 0) + n
    nets = Network.objects.in_bulk([pk for pk in per_net if pk is not None])
    out: list[NetworkExposure] = []
    for net_id, counts in per_net.items():
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        net = nets.get(net_id)
        out.append(
            {
                "network_id": net.pk if net else None,
                "cidr": net.cidr if net else None,
                "zone": net.zone if net else "",
                "open": sum(counts.values()),
                "services": ranked[:services],
                "other": sum(n for _, n in ranked[services:]),
            }
        )
    out.sort(key=lambda row: (-row["open"], row["cidr"] or "~"))
    if seconds:
        cache.set(key, out, seconds)
    return out


PORT_CSV_FIELDS = (
    "proto", "port", "state", "service", "product", "version", "first_seen", "last_seen",
    "seen_count", "missed_runs",
)  # fmt: skip
# Hosts whose ports one query of the ports CSV reads.
CSV_HOSTS = 500


def ports_csv_rows(*, state: str | None) -> Iterator[tuple]:
    """Ports (of one state, or all) as (ip, *PORT_CSV_FIELDS), hosts in numeric address
    order (10.0.0.9 before 10.0.0.10, IPv4 before IPv6), then proto and port.

    The hosts (id and address) are read once and sorted here; their ports in batches of
    CSV_HOSTS hosts: memory stays flat whatever the number of ports (one iterator() over
    the ports grew with them on MariaDB, whose client library holds a whole result set).
    """
    hosts = sorted(Host.objects.values_list("pk", "ip"), key=lambda h: address_order(h[1]))
    ports = Port.objects.order_by().values_list("host_id", *PORT_CSV_FIELDS)
    if state:
        ports = ports.filter(state=state)
    for start in range(0, len(hosts), CSV_HOSTS):
        batch = hosts[start : start + CSV_HOSTS]
        by_host: dict[int, list[tuple]] = {}
        for row in ports.filter(host_id__in=[pk for pk, _ in batch]):
            by_host.setdefault(row[0], []).append(row[1:])
        for pk, ip in batch:
            for row in sorted(by_host.get(pk, ()), key=lambda r: (r[0], r[1])):
                yield (ip, *row)


def hosts_list(*, q: str = "") -> QuerySet[Host]:
    qs = Host.objects.select_related("network")
    if q:
        qs = qs.filter(Q(ip__startswith=q) | Q(hostname__icontains=q))
    return qs.order_by("ip")


@dataclass(frozen=True)
class HostRow:
    """A host as the hosts list shows it (network loaded), with its open-port count."""

    host: Host
    open_ports: int


def _host_rows(hosts: list[Host]) -> list[HostRow]:
    """The hosts of a page with their open-port counts (one grouped query)."""
    counts = dict(
        Port.objects.filter(host__in=hosts, state=PortState.OPEN)
        .values_list("host_id")
        .annotate(n=Count("id"))
    )
    return [HostRow(host=host, open_ports=counts.get(host.pk, 0)) for host in hosts]


def hosts_page(*, q: str = "", number: str | None, size: int) -> Page[HostRow]:
    """A page of hosts by IP, each with its open-port count.

    Counted for the page's hosts only: annotating the list grouped every host's ports
    before the page was cut (10,000 hosts: 0.35 s, bench/dashboard_bench.py).
    """
    return Paginator(RowsOf(hosts_list(q=q), _host_rows), size).get_page(number)


# Observations of one host read for its ports' fingerprint history (newest first): a
# daily scan of a host with 50 ports keeps a month of changes in view.
HOST_HISTORY_ROWS = 1500


class FingerprintStep(TypedDict):
    label: str
    since: datetime


class HostDetail(TypedDict):
    host: Host
    ports: list[Port]
    # {(proto, port): fingerprints}
    history: dict[tuple[str, int], list[FingerprintStep]]


def host_detail(ip: str) -> HostDetail:
    """A host and its ports, open ones first, and each port's `history`: its fingerprints as
    they changed (oldest first, consecutive repeats collapsed, unfingerprinted runs left
    out); Host.DoesNotExist, or ValueError for a malformed address."""
    host = Host.objects.select_related("network").get(ip=ip)
    ports = sorted(
        Port.objects.filter(host=host),
        key=lambda p: (p.state != PortState.OPEN, p.proto, p.port),
    )
    seen = (
        PortObservation.objects.filter(host=host, fingerprinted=True)
        .order_by("-seen_at", "-id")
        .values_list("proto", "port", "service", "product", "version", "seen_at")[
            :HOST_HISTORY_ROWS
        ]
    )
    history: dict[tuple[str, int], list[FingerprintStep]] = {}
    for proto, port, service, product, version, at in reversed(list(seen)):
        label = " ".join(x for x in (service, product, version) if x)
        steps = history.setdefault((proto, port), [])
        if label and (not steps or steps[-1]["label"] != label):
            steps.append({"label": label, "since": at})
    return {"host": host, "ports": ports, "history": history}


# A run in one of these states is still moving: its pages refresh themselves.
ACTIVE_RUN_STATES = frozenset({"pending", "sweeping", "fingerprinting"})


def runs_list() -> QuerySet[ScanRun]:
    return (
        ScanRun.objects.select_related("policy")
        .annotate(
            shard_count=Count("shards", distinct=True),
            shards_done=Count("shards", filter=Q(shards__state="done"), distinct=True),
            shards_failed=Count("shards", filter=Q(shards__state="failed"), distinct=True),
        )
        .order_by("-created_at", "-id")
    )


def run_tree(run_id: int) -> dict:
    run = ScanRun.objects.select_related("policy").get(pk=run_id)
    shards = list(ScanShard.objects.filter(run=run).order_by("index"))
    fp = run.observations.aggregate(
        total=Count("id"),
        done=Count("id", filter=Q(fingerprinted=True)),
        claimed=Count("id", filter=Q(fingerprinted=False) & ~Q(fingerprint_claim="")),
    )
    total = sum(s.probes_total for s in shards) or 1
    done = sum(s.probes_total if s.state == "done" else s.probes_done for s in shards)
    return {
        "run": run,
        "shards": shards,
        "fingerprints": fp,
        "percent": round(100.0 * done / total, 1),
        "active": run.state in ACTIVE_RUN_STATES,
    }


# Rows of a run's findings its page lists (the count says how many there are in all):
# 200 rows took 56 ms to render (bench/dashboard_bench.py), most of it per-row links.
RUN_PAGE_ROWS = 100


def run_ports(*, run_id: int, limit: int = RUN_PAGE_ROWS) -> list[PortObservation]:
    """The open ports a run found (host loaded), by address then port, at most `limit`."""
    return list(
        PortObservation.objects.filter(run_id=run_id)
        .select_related("host")
        .order_by("host__ip", "proto", "port")[:limit]
    )


def policies_list() -> QuerySet[ScanPolicy]:
    last = ScanRun.objects.filter(policy=OuterRef("pk")).order_by("-created_at", "-id")
    return ScanPolicy.objects.annotate(
        last_run_id=Subquery(last.values("pk")[:1]),
        last_run_state=Subquery(last.values("state")[:1]),
        last_run_at=Subquery(last.values("created_at")[:1]),
        last_ok_at=Subquery(last.filter(state="finished", degraded=False).values("created_at")[:1]),
    ).order_by("name")


def networks_list() -> QuerySet[Network]:
    return Network.objects.prefetch_related("exclusions").annotate(host_count=Count("hosts"))
