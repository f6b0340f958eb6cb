"""Reads for the dashboard pages, the CSV export and the API (no writes here)."""

import ipaddress
from collections.abc import Iterator
from datetime import datetime, time, timedelta

from django.core.paginator import Page, Paginator
from django.db.models import Count, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import TruncDate
from django.utils import timezone

from alerts.models import OPEN_STATES, AlertEvent, EventAudit, EventKind, Rule
from alerts.severity import Severity
from dashboard.filters import EventFilters
from scanner.models import Host, Network, Port, PortState, ScanPolicy, ScanRun, ScanShard
from scanner.targets import address_order


def _day_start(day) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def events_filtered(f: EventFilters) -> QuerySet[AlertEvent]:
    """Events matching the filters, newest first, with what a list row shows loaded."""
    qs = AlertEvent.objects.select_related("host", "host__network", "rule")
    states = set(f.states)
    if "open" in states:
        states = (states - {"open"}) | set(OPEN_STATES)
    if states:
        qs = qs.filter(state__in=sorted(states))
    if f.kinds:
        qs = qs.filter(kind__in=f.kinds)
    if f.severity is not None:
        qs = qs.filter(severity__gte=f.severity)
    # Host conditions are subqueries on host_id, not joins: with a join MariaDB may read
    # the hosts first and sort every matching event instead of walking an event index.
    if f.network_id is not None:
        qs = qs.filter(host_id__in=Host.objects.filter(network_id=f.network_id).values("pk"))
    if f.host:
        net = ipaddress.ip_network(f.host, strict=False)
        if net.num_addresses == 1:
            one = Host.objects.filter(ip=str(net.network_address)).values("pk")
            qs = qs.filter(host_id__in=one)
        else:
            qs = qs.filter(_events_of_hosts_in(net))
    if f.port is not None:
        qs = qs.filter(port=f.port)
    if f.proto:
        qs = qs.filter(proto=f.proto)
    if f.since is not None:
        qs = qs.filter(created_at__gte=_day_start(f.since))
    if f.until is not None:
        qs = qs.filter(created_at__lt=_day_start(f.until + timedelta(days=1)))
    if f.rule_id is not None:
        qs = qs.filter(rule_id=f.rule_id)
    if f.run_id is not None:
        qs = qs.filter(run_id=f.run_id)
    if f.suppressed == "yes":
        qs = qs.filter(suppressed=True)
    elif f.suppressed == "no":
        qs = qs.filter(suppressed=False)
    return qs.order_by("-created_at", "-id")


def _events_of_hosts_in(net) -> Q:
    """A condition on events: their host's address is inside a CIDR (Host.ip is text, so
    the addresses are tested here).

    A literal id list, the shorter of inside and outside: as a subquery MariaDB read the
    hosts first and sorted all their events (a /16 holding every host: 0.3 s), and a
    CIDR that holds most hosts becomes a short exclusion, or no condition at all.
    """
    inside, outside = [], []
    for pk, ip in Host.objects.values_list("pk", "ip").iterator(chunk_size=5000):
        (inside if ipaddress.ip_address(ip) in net else outside).append(pk)
    if len(outside) < len(inside):
        # Bounded by the hosts read: one created meanwhile is not "inside" by default.
        return Q(host_id__lte=max(inside + outside)) & ~Q(host_id__in=outside)
    return Q(host_id__in=inside)


EVENT_ROW_RELATED = ("host", "host__network", "rule")


def events_page(f: EventFilters, *, number, size: int) -> Page:
    """One page of the filtered events, each with what a list row shows.

    The page's ids come from the events table alone (an index gives the order and the
    count), then its rows are loaded by id: one query joining hosts had MariaDB sort the
    whole join (100,000 events: 0.5 s a page, bench/dashboard_bench.py).
    """
    ids = events_filtered(f).select_related(None).values_list("pk", flat=True)
    page = Paginator(ids, size).get_page(number)
    page.object_list = events_by_ids(list(page.object_list), EVENT_ROW_RELATED)
    return page


def events_by_ids(ids: list[int], related: tuple[str, ...]) -> list[AlertEvent]:
    """The events of a page of ids, in that order, with `related` joined; an id deleted
    since it was read is left out."""
    by_id = AlertEvent.objects.select_related(*related).in_bulk(ids)
    return [by_id[pk] for pk in ids if pk in by_id]


# Events the CSV export reads per query.
CSV_PAGE = 2000
CSV_FIELDS = (
    "pk", "created_at", "host_id", "proto", "port", "kind", "severity", "state", "suppressed",
    "rule_id", "run_id", "immediate",
)  # fmt: skip


def events_csv_rows(f: EventFilters) -> Iterator[tuple]:
    """The filtered events as CSV_FIELDS tuples with host_id replaced by the IP, newest first.

    Keyset pages of CSV_PAGE rows, not iterator(): MariaDB's client library holds a whole
    result set in memory, chunked or not (all 100,000 events: +37 MiB). The IPs of a page
    come from one query on its host ids, keeping the event query on its own indexes.
    """
    base = events_filtered(f).select_related(None).values_list(*CSV_FIELDS)
    after = None
    while True:
        rows = base
        if after is not None:
            # Strictly older than the last row sent (ties on created_at broken by id).
            rows = rows.filter(created_at__lte=after[1]).filter(
                Q(created_at__lt=after[1]) | Q(pk__lt=after[0])
            )
        page = list(rows[:CSV_PAGE])
        ips = dict(Host.objects.filter(pk__in={r[2] for r in page}).values_list("pk", "ip"))
        for row in page:
            yield (*row[:2], ips.get(row[2], ""), *row[3:])
        if len(page) < CSV_PAGE:
            return
        after = page[-1]


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


def event_detail(event_id: int) -> AlertEvent:
    return (
        AlertEvent.objects.select_related("host", "host__network", "rule", "run", "run__policy")
        .prefetch_related("notes__author", "audit__actor")
        .get(pk=event_id)
    )


def overview() -> dict:
    now = timezone.now()
    open_by_severity = dict(
        AlertEvent.objects.filter(state__in=OPEN_STATES, suppressed=False)
        .values_list("severity")
        .annotate(n=Count("id"))
    )
    since = (now - timedelta(days=13)).date()
    per_day = dict(
        AlertEvent.objects.filter(created_at__gte=_day_start(since))
        .annotate(day=TruncDate("created_at"))
        .values_list("day")
        .annotate(n=Count("id"))
    )
    days = [since + timedelta(days=i) for i in range(14)]
    runs = list(
        ScanRun.objects.select_related("policy")
        .annotate(
            shard_count=Count("shards"),
            shards_failed=Count("shards", filter=Q(shards__state="failed")),
        )
        .order_by("-created_at", "-id")[:10]
    )
    finished = list(
        ScanRun.objects.filter(state="finished")
        .order_by("-created_at", "-id")
        .values_list("created_at", "ports_found", "degraded")[:30]
    )
    return {
        "open_ports": Port.objects.filter(state=PortState.OPEN).count(),
        "hosts": Host.objects.count(),
        "networks": Network.objects.count(),
        "open_events": [
            (label, value, open_by_severity.get(value, 0))
            for value, label in reversed(Severity.choices)
        ],
        "events_per_day": _bars([(d, per_day.get(d, 0)) for d in days]),
        "ports_over_time": _bars(list(reversed(finished)), value_index=1),
        "runs": runs,
    }


def _bars(rows: list, value_index: int = 1) -> list[dict]:
    """Rows with a percent of the largest value, for CSS bar charts (no chart library)."""
    top = max((r[value_index] for r in rows), default=0) or 1
    return [{"row": r, "value": r[value_index], "pct": 100 * r[value_index] // top} for r in rows]


def since_last_visit(*, user, since: datetime) -> dict:
    events = AlertEvent.objects.filter(created_at__gte=since).select_related("host")
    return {
        "since": since,
        "new": events.exclude(kind__in=[EventKind.CLOSED, EventKind.SERVICE_CHANGED])[:200],
        "closed": events.filter(kind=EventKind.CLOSED)[:200],
        "changed": events.filter(kind=EventKind.SERVICE_CHANGED)[:200],
        "triaged": EventAudit.objects.filter(at__gte=since, actor__isnull=False)
        .exclude(actor=user)
        .select_related("actor", "event", "event__host")
        .order_by("-at")[:200],
    }


def hosts_list(*, q: str = "") -> QuerySet[Host]:
    qs = Host.objects.select_related("network")
    if q:
        qs = qs.filter(Q(ip__startswith=q) | Q(hostname__icontains=q))
    return qs.order_by("ip")


def hosts_page(*, q: str = "", number, size: int) -> Page:
    """A page of hosts by IP, each with its open-port count.

    Counted for the page's hosts only: annotating the list grouped every host's ports
    before the page was cut (10,000 hosts: 0.35 s, bench/dashboard_bench.py).
    """
    page = Paginator(hosts_list(q=q), size).get_page(number)
    hosts = list(page.object_list)
    counts = dict(
        Port.objects.filter(host__in=hosts, state=PortState.OPEN)
        .values_list("host_id")
        .annotate(n=Count("id"))
    )
    for host in hosts:
        host.open_ports = counts.get(host.pk, 0)
    page.object_list = hosts
    return page


def host_detail(ip: str) -> dict:
    host = Host.objects.select_related("network").get(ip=ip)
    return {
        "host": host,
        "ports": list(Port.objects.filter(host=host).order_by("state", "proto", "port")),
        "events": list(
            AlertEvent.objects.filter(host=host)
            .select_related("rule")
            .order_by("-created_at")[:100]
        ),
    }


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
        "events": run.events.count(),
    }


def rules_list() -> QuerySet[Rule]:
    return Rule.objects.order_by("-enabled", "id")


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
