"""Reads for alerts: event lists and pages (the dashboard, the CSV export and the API read
the same ones), active rules, the high-risk list, rule dry runs."""

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, TypedDict

from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.paginator import Page, Paginator
from django.db.models import Count, Exists, Min, OuterRef, Q, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone

from alerts.filters import EventFilters
from alerts.models import OPEN_STATES, AlertEvent, EventAudit, EventKind, HighRiskPort, Rule
from alerts.rule_files import RULE_FIELDS, PlanItem, RuleEntry, rules_import_plan
from alerts.rules import MATCH_FIELDS, RuleSpec, Subject, rule_spec_validate
from alerts.severity import Severity
from portmon.cachekeys import cache_key
from portmon.paging import RowsOf
from scanner.models import Host, Port


def rule_spec_of(rule: Rule) -> RuleSpec:
    return RuleSpec(id=rule.pk, **{name: getattr(rule, name) for name in MATCH_FIELDS})


def rule_entry_of(rule: Rule) -> RuleEntry:
    """A rule as it is written to a rules file (the fields a person sets)."""
    return RuleEntry(**{name: getattr(rule, name) for name in RULE_FIELDS})


def rule_entries_load() -> list[tuple[int, RuleEntry]]:
    """Every rule (enabled, disabled or expired) as (id, entry), oldest first."""
    return [(r.pk, rule_entry_of(r)) for r in Rule.objects.order_by("id")]


def rule_specs_load() -> list[RuleSpec]:
    """Enabled rules as plain specs (expiry is checked by the matcher at the run's time)."""
    return [rule_spec_of(r) for r in Rule.objects.filter(enabled=True)]


def high_risk_ports() -> set[tuple[str, int]]:
    return set(HighRiskPort.objects.values_list("proto", "port"))


def events_list(
    *,
    states: list[str] | None = None,
    kinds: list[str] | None = None,
    since: datetime | None = None,
    include_suppressed: bool = True,
) -> QuerySet[AlertEvent]:
    """Events newest first, with host, network and rule loaded (no N+1 on lists)."""
    qs = AlertEvent.objects.select_related("host", "host__network", "rule")
    if states:
        qs = qs.filter(state__in=states)
    if kinds:
        qs = qs.filter(kind__in=kinds)
    if since is not None:
        qs = qs.filter(created_at__gte=since)
    if not include_suppressed:
        qs = qs.filter(suppressed=False)
    return qs.order_by("-created_at", "-id")


def rules_import_preview(
    entries: list[RuleEntry], *, now: datetime | None = None
) -> list[tuple[PlanItem, int]]:
    """The dry run of an import: each rule's change and how many events of the last 7 days
    it matches (its own fields only, as the rule page's dry run)."""
    plan = rules_import_plan(entries, rule_entries_load())
    counts = rule_dry_run_counts(specs=[item.entry.spec() for item in plan], now=now)
    return list(zip(plan, counts, strict=True))


# --- dry runs: what a rule would catch (reads only) ------------------------------
DRY_RUN_DAYS = 7


def rule_dry_run(
    *, spec: RuleSpec, now: datetime | None = None, days: int = DRY_RUN_DAYS
) -> list[AlertEvent]:
    """Events of the last `days` days that a rule (saved, or a draft with id None) matches.

    Matched on the rule's own fields only (not precedence against other rules, nor whether
    it is enabled or expired): the question is "what does this rule catch", not "what
    would change".
    """
    rule_spec_validate(
        ip_cidr=spec.ip_cidr, port_lo=spec.port_lo, port_hi=spec.port_hi, process=spec.process
    )
    now = now or timezone.now()
    events = AlertEvent.objects.filter(
        created_at__gte=now - timedelta(days=days), created_at__lte=now
    ).select_related("host", "host__network")
    return [e for e in events.order_by("-created_at", "-id") if spec.matches(_subject(e))]


def _subject(event: AlertEvent) -> Subject:
    detail = event.detail or {}
    net = event.host.network
    return Subject(
        ip=event.host.ip,
        proto=event.proto,
        port=event.port,
        zone=detail.get("zone") or (net.zone if net else ""),
        process=detail.get("process", ""),
    )


def rule_open_matches(*, spec: RuleSpec) -> list[int]:
    """Ids of the open events (any age) a rule matches on its own fields, worst first: what
    saving an allow rule from an event resolves. The database narrows by protocol, port
    and address; the rule itself decides (zone, process glob, exact CIDR)."""
    rule_spec_validate(
        ip_cidr=spec.ip_cidr, port_lo=spec.port_lo, port_hi=spec.port_hi, process=spec.process
    )
    qs = AlertEvent.objects.filter(state__in=OPEN_STATES)
    if spec.proto not in ("", "any"):
        qs = qs.filter(proto=spec.proto)
    if spec.port_lo is not None:
        hi = spec.port_hi if spec.port_hi is not None else spec.port_lo
        qs = qs.filter(port__gte=spec.port_lo, port__lte=hi)
    if spec.ip_cidr:
        net = ipaddress.ip_network(spec.ip_cidr.strip(), strict=False)
        if net.num_addresses == 1:
            qs = qs.filter(host_id__in=Host.objects.filter(ip=str(net.network_address)))
        else:
            qs = qs.filter(_events_of_hosts_in(net))
    qs = qs.select_related("host", "host__network").only(
        "pk", "proto", "port", "detail", "host__ip", "host__network__zone"
    )
    return [
        e.pk
        for e in qs.order_by(*EVENT_ORDERS["severity"]).iterator(chunk_size=2000)
        if spec.matches(_subject(e))
    ]


# Matches a rule's dry run lists (the count is of all of them).
PREVIEW_ROWS = 50


class RulePreview(TypedDict):
    open_count: int
    rows: list["EventRow"]
    recent_count: int


def rule_preview(*, spec: RuleSpec) -> RulePreview:
    """The rule form's dry run: how many open events the rule matches and the worst
    PREVIEW_ROWS of them (as list rows), and how many events of the last 7 days."""
    ids = rule_open_matches(spec=spec)
    return {
        "open_count": len(ids),
        "rows": event_rows(events_by_ids(ids[:PREVIEW_ROWS], EVENT_ROW_RELATED)),
        "recent_count": len(rule_dry_run(spec=spec)),
    }


def rule_dry_run_counts(
    *, specs: list[RuleSpec], now: datetime | None = None, days: int = DRY_RUN_DAYS
) -> list[int]:
    """How many events of the last `days` days each spec matches (rule_dry_run's question
    for many rules at once: the events are read once, not once per rule)."""
    if not specs:
        return []
    now = now or timezone.now()
    counts = [0] * len(specs)
    events = AlertEvent.objects.filter(
        created_at__gte=now - timedelta(days=days), created_at__lte=now
    ).select_related("host", "host__network")
    for event in events.only("proto", "port", "detail", "host__ip", "host__network__zone").iterator(
        chunk_size=2000
    ):
        subject = _subject(event)
        for i, spec in enumerate(specs):
            if spec.matches(subject):
                counts[i] += 1
    return counts


# --- event lists, pages and exports (the dashboard, the CSV export, the API) ----------


def _day_start(day: date) -> datetime:
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
    if f.severity_max is not None:
        qs = qs.filter(severity__lte=f.severity_max)
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
    if f.q:
        qs = qs.filter(_events_matching(f.q))
    return qs.order_by(*EVENT_ORDERS[f.sort])


EVENT_ORDERS = {
    # Ties broken by id descending: MariaDB then walks alertevent_severity_idx backwards
    # (severity, -created_at, and the id InnoDB appends) and stops after one page; with
    # "id" ascending it sorted every open event (100,000 events: 250 ms, now 1 ms).
    "severity": ("-severity", "created_at", "-id"),
    "newest": ("-created_at", "-id"),
    "oldest": ("created_at", "id"),
}
# What the search box reads in an event's detail, by the kinds that carry it: the
# fingerprints of a service change, the process a host agent named. Gated by kind (an
# index), so that most events are not parsed as JSON at all.
SEARCHED_DETAIL = {
    EventKind.SERVICE_CHANGED: (
        "detail__new__service", "detail__new__product", "detail__old__service",
        "detail__old__product",
    ),
    EventKind.NEW_PROCESS: ("detail__process",),
    EventKind.PROCESS_CHANGED: ("detail__process", "detail__previous_process"),
}  # fmt: skip
# Ports whose fingerprint a search names, matched as (host, proto, port) pairs up to this
# many; a word naming more (a common service such as "http") is matched row by row.
SEARCH_PORT_PAIRS = 300


def _events_matching(q: str) -> Q:
    """One search box: an address (or part of one) or host name, a port number, a service,
    product or process (the port's current fingerprint, a change's old and new one, the
    process a host agent named)."""
    hosts = Host.objects.filter(Q(ip__contains=q) | Q(hostname__icontains=q)).values("pk")
    cond = Q(host_id__in=hosts)
    if q.isascii() and q.isdigit() and 0 <= int(q) <= 65535:
        cond |= Q(port=int(q))
    # The detail's text first (one LIKE), its JSON paths only where the words occur.
    in_detail = Q()
    for kind, paths in SEARCHED_DETAIL.items():
        in_paths = Q()
        for path in paths:
            in_paths |= Q(**{f"{path}__icontains": q})
        in_detail |= Q(kind=kind) & in_paths
    cond |= Q(kind__in=list(SEARCHED_DETAIL)) & Q(detail__icontains=q) & in_detail
    named = Port.objects.filter(Q(service__icontains=q) | Q(product__icontains=q))
    pairs = list(named.values_list("host_id", "proto", "port")[: SEARCH_PORT_PAIRS + 1])
    if len(pairs) <= SEARCH_PORT_PAIRS:
        for host_id, proto, port in pairs:
            cond |= Q(host_id=host_id, proto=proto, port=port)
    else:
        same_port = named.filter(
            host_id=OuterRef("host_id"), proto=OuterRef("proto"), port=OuterRef("port")
        )
        cond |= Q(Exists(same_port))
    return cond


def _events_of_hosts_in(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> Q:
    """A condition on events: their host's address is inside a CIDR (Host.ip is text, so
    the addresses are tested here).

    A literal id list, the shorter of inside and outside: as a subquery MariaDB read the
    hosts first and sorted all their events (a /16 holding every host: 0.3 s), and a
    CIDR that holds most hosts becomes a short exclusion, or no condition at all.
    """
    inside: list[int] = []
    outside: list[int] = []
    for pk, ip in Host.objects.values_list("pk", "ip").iterator(chunk_size=5000):
        (inside if ipaddress.ip_address(ip) in net else outside).append(pk)
    if len(outside) < len(inside):
        # Bounded by the hosts read: one created meanwhile is not "inside" by default.
        return Q(host_id__lte=max(inside + outside)) & ~Q(host_id__in=outside)
    return Q(host_id__in=inside)


EVENT_ROW_RELATED = ("host", "host__network", "rule")


# A search finds at most this many matches before it says "more than 1000": counting
# every match of a common word reads every event.
SEARCH_COUNT_CAP = 1000


@dataclass(frozen=True)
class EventRow:
    """An event as a list row shows it: the event (host, network and rule loaded) and
    what the row shows beyond its columns."""

    event: AlertEvent
    service: str  # "old -> new" on a change; else the event's fingerprint, else its port's
    process: str  # from a host agent, "old -> new" on a change
    owner: str  # the network's


class CappedPaginator(Paginator):  # Paginator[EventRow] (not subscriptable at run time)
    """A paginator told its count (at most SEARCH_COUNT_CAP + 1) instead of counting."""

    def __init__(self, object_list: RowsOf[int, EventRow], per_page: int, *, count: int) -> None:
        super().__init__(object_list, per_page)
        self._known_count = count

    @property
    def count(self) -> int:
        return self._known_count

    @property
    def capped(self) -> bool:
        return self._known_count > SEARCH_COUNT_CAP

    @property
    def cap(self) -> int:
        return SEARCH_COUNT_CAP


def events_page(f: EventFilters, *, number: str | None, size: int) -> Page[EventRow]:
    """One page of the filtered events, each with what a list row shows.

    The page's ids come from the events table alone (an index gives the order and the
    count), then its rows are loaded by id: one query joining hosts had MariaDB sort the
    whole join (100,000 events: 0.5 s a page, bench/dashboard_bench.py).

    A search is matched first without an order (one pass that stops at the cap): walking
    the severity index for a rare word visited every open event at random (100,000
    events: 0.6 s). Up to the cap the matches are then put in order by id; beyond it the
    ordered walk finds a page at once.
    """
    ids = events_filtered(f).select_related(None).values_list("pk", flat=True)
    if not f.q:
        return Paginator(RowsOf(ids, _event_rows_of_ids), size).get_page(number)
    found = list(ids.order_by()[: SEARCH_COUNT_CAP + 1])
    rows = RowsOf(ids, _event_rows_of_ids)
    if len(found) <= SEARCH_COUNT_CAP:
        ordered = AlertEvent.objects.filter(pk__in=found).order_by(*EVENT_ORDERS[f.sort])
        rows = RowsOf(list(ordered.values_list("pk", flat=True)), _event_rows_of_ids)
    return CappedPaginator(rows, size, count=len(found)).get_page(number)


def _event_rows_of_ids(ids: list[int]) -> list[EventRow]:
    return event_rows(events_by_ids(ids, EVENT_ROW_RELATED))


def fingerprint_label(fp: dict[str, Any] | Port) -> str:
    """A fingerprint as text ("ssh OpenSSH 9.2"), from a dict (detail["new"]) or a Port row."""
    names = ("service", "product", "version")
    if isinstance(fp, dict):
        values = [fp.get(name, "") for name in names]
    else:
        values = [getattr(fp, name, "") for name in names]
    return " ".join(str(value or "") for value in values).strip()


def event_rows(events: list[AlertEvent]) -> list[EventRow]:
    """Each event as a list row (EventRow); the ports of the whole page are read in one
    query."""
    keys = {(e.host_id, e.proto, e.port) for e in events}
    host_ids = {k[0] for k in keys}
    current: dict[tuple[int, str, int], Port] = {}
    if host_ids:
        ports = Port.objects.filter(host_id__in=host_ids, port__in={k[2] for k in keys}).only(
            "host_id", "proto", "port", "service", "product", "version"
        )
        current = {(p.host_id, p.proto, p.port): p for p in ports}
    rows: list[EventRow] = []
    for e in events:
        detail = e.detail if isinstance(e.detail, dict) else {}
        new = fingerprint_label(detail["new"]) if isinstance(detail.get("new"), dict) else ""
        old = fingerprint_label(detail["old"]) if isinstance(detail.get("old"), dict) else ""
        if not new and (e.host_id, e.proto, e.port) in current:
            new = fingerprint_label(current[(e.host_id, e.proto, e.port)])
        process = str(detail.get("process") or "")
        before = str(detail.get("previous_process") or "")
        network = e.host.network
        rows.append(
            EventRow(
                event=e,
                service=f"{old or '?'} -> {new or '?'}" if old or "old" in detail else new,
                process=f"{before} -> {process}" if before and before != process else process,
                owner=network.owner_email if network else "",
            )
        )
    return rows


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
    # Newest first whatever the page's order: the keyset below walks created_at down.
    base = (
        events_filtered(f)
        .select_related(None)
        .order_by("-created_at", "-id")
        .values_list(*CSV_FIELDS)
    )
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


def event_detail(event_id: int) -> AlertEvent:
    return (
        AlertEvent.objects.select_related("host", "host__network", "rule", "run", "run__policy")
        .prefetch_related("notes__author", "audit__actor")
        .get(pk=event_id)
    )


def host_events(*, host_id: int, limit: int = 100) -> list[AlertEvent]:
    """A host's latest events (the host page)."""
    return list(
        AlertEvent.objects.filter(host_id=host_id)
        .select_related("rule")
        .order_by("-created_at")[:limit]
    )


def run_events_count(*, run_id: int) -> int:
    return AlertEvent.objects.filter(run_id=run_id).count()


def run_events(*, run_id: int, limit: int = 100) -> list[AlertEvent]:
    """The events a run's diff raised (host loaded), worst first, at most `limit` (the run page)."""
    return list(
        AlertEvent.objects.filter(run_id=run_id)
        .select_related("host")
        .order_by("-severity", "-created_at", "-id")[:limit]
    )


class AgeingRow(TypedDict):
    label: str
    value: int
    open: int
    overdue: int
    target_days: int
    oldest_days: int | None
    oldest_at: datetime | None


class EventsOverview(TypedDict):
    open_events: list[tuple[str, int, int]]
    ageing: list[AgeingRow]
    overdue_total: int
    top_open: list[AlertEvent]
    top_open_total: int
    events_per_day: list[tuple[date, dict[str, int]]]


# {severity: (open, overdue, oldest)} and {day: {severity label: events}}
SeverityCounts = dict[int, tuple[int, int, datetime | None]]
DayCounts = dict[date, dict[str, int]]


def events_overview(
    *, days: int = 14, top: int = 10, now: datetime | None = None
) -> EventsOverview:
    """What the home page shows of events: what is new and dangerous, and how old.

    - `open_events`: (label, value, count) of open, alerted events per severity, worst first;
    - `ageing`: per severity (worst first) the open count, the oldest one's age in days, the
      target from PORTMON_TARGET_DAYS and how many are past it (`overdue`);
    - `top_open`: the `top` newest open high/critical events (host loaded), worst first,
      and `top_open_total`, how many there are in all;
    - `events_per_day`: (day, {severity label: count}) over the last `days` days, oldest
      first, every day present (zeros included).
    """
    now = now or timezone.now()
    targets = settings.PORTMON_TARGET_DAYS
    alerted_open = AlertEvent.objects.filter(state__in=OPEN_STATES, suppressed=False)
    since = (now - timedelta(days=days - 1)).date()
    by_severity, per_day = _overview_counts(now=now, since=since)
    worst_first = list(reversed(Severity.choices))
    ageing: list[AgeingRow] = []
    for value, label in worst_first:
        n, late, oldest = by_severity.get(value, (0, 0, None))
        ageing.append(
            {
                "label": label,
                "value": value,
                "open": n,
                "overdue": late,
                "target_days": targets[label],
                "oldest_days": (now - oldest).days if oldest else None,
                "oldest_at": oldest,
            }
        )
    dangerous = alerted_open.filter(severity__gte=Severity.HIGH)
    top_open = list(
        dangerous.select_related("host", "host__network").order_by(
            "-severity", "-created_at", "-id"
        )[:top]
    )
    span = [since + timedelta(days=i) for i in range(days)]
    return {
        "open_events": [(a["label"], a["value"], a["open"]) for a in ageing],
        "ageing": ageing,
        "overdue_total": sum(a["overdue"] for a in ageing),
        "top_open": top_open,
        "top_open_total": sum(by_severity.get(v, (0,))[0] for v, _ in worst_first[:2]),
        "events_per_day": [(d, per_day.get(d, {})) for d in span],
    }


def _overview_counts(*, now: datetime, since: date) -> tuple[SeverityCounts, DayCounts]:
    """The overview's aggregates over all events: {severity: (open, overdue, oldest)} of
    open alerted events, and {day: {severity label: n}} of events raised since `since`.

    Cached for PORTMON_OVERVIEW_CACHE_SECONDS under a key that changes with every event raised and
    every triage step (the newest event and audit row ids): reading both counts costs
    0.3-0.7 s with 100,000 events on a loaded machine, and a page showing the overview to
    several people, or reloaded, would pay it each time. A change that bypasses the event
    services (an edit in the admin) shows within the cache time.
    """
    seconds = settings.PORTMON_OVERVIEW_CACHE_SECONDS
    key = ""
    if seconds:
        newest_event = AlertEvent.objects.order_by("-pk").values_list("pk", flat=True).first()
        newest_step = EventAudit.objects.order_by("-pk").values_list("pk", flat=True).first()
        key = cache_key("alerts:overview", since, newest_event, newest_step)
        cached = cache.get(key)
        if cached is not None:
            return cached
    targets = settings.PORTMON_TARGET_DAYS
    overdue = Q(pk__in=[])
    for value, label in Severity.choices:
        overdue |= Q(severity=value, created_at__lt=now - timedelta(days=targets[label]))
    by_severity: SeverityCounts = {
        sev: (n, late, oldest)
        for sev, n, late, oldest in AlertEvent.objects.filter(
            state__in=OPEN_STATES, suppressed=False
        )
        .order_by()
        .values_list("severity")
        .annotate(n=Count("id"), late=Count("id", filter=overdue), oldest=Min("created_at"))
    }
    labels = dict(Severity.choices)
    per_day: DayCounts = {}
    for day, sev, n in (
        AlertEvent.objects.filter(created_at__gte=_day_start(since))
        .annotate(day=TruncDate("created_at"))
        .order_by()
        .values_list("day", "severity")
        .annotate(n=Count("id"))
    ):
        per_day.setdefault(day, {})[labels.get(sev, str(sev))] = n
    if seconds:
        cache.set(key, (by_severity, per_day), seconds)
    return by_severity, per_day


class SinceLastVisit(TypedDict):
    since: datetime
    new: QuerySet[AlertEvent]
    closed: QuerySet[AlertEvent]
    changed: QuerySet[AlertEvent]
    triaged: QuerySet[EventAudit]


def since_last_visit(*, user: User, since: datetime) -> SinceLastVisit:
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


def rules_list() -> QuerySet[Rule]:
    return Rule.objects.order_by("-enabled", "id")
