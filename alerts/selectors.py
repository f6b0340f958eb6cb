"""Reads for alerts: event lists and pages (the dashboard, the CSV export and the API read
the same ones), active rules, the high-risk list, rule dry runs."""

import ipaddress
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta

from django.core.paginator import Page, Paginator
from django.db.models import Count, Q, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone

from alerts.filters import EventFilters
from alerts.models import OPEN_STATES, AlertEvent, EventAudit, EventKind, HighRiskPort, Rule
from alerts.rule_files import RULE_FIELDS, PlanItem, RuleEntry, rules_import_plan
from alerts.rules import MATCH_FIELDS, RuleSpec, Subject, rule_spec_validate
from alerts.severity import Severity
from scanner.models import Host


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


def events_overview(*, days: int = 14) -> dict:
    """Open events by severity (worst first: label, value, count) and events per day over
    the last `days` days ((day, count), oldest first), for the home page."""
    open_by_severity = dict(
        AlertEvent.objects.filter(state__in=OPEN_STATES, suppressed=False)
        .values_list("severity")
        .annotate(n=Count("id"))
    )
    since = (timezone.now() - timedelta(days=days - 1)).date()
    per_day = dict(
        AlertEvent.objects.filter(created_at__gte=_day_start(since))
        .annotate(day=TruncDate("created_at"))
        .values_list("day")
        .annotate(n=Count("id"))
    )
    span = [since + timedelta(days=i) for i in range(days)]
    return {
        "open_events": [
            (label, value, open_by_severity.get(value, 0))
            for value, label in reversed(Severity.choices)
        ],
        "events_per_day": [(d, per_day.get(d, 0)) for d in span],
    }


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


def rules_list() -> QuerySet[Rule]:
    return Rule.objects.order_by("-enabled", "id")
