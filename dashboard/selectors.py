"""Reads for the dashboard pages, the CSV export and the API (no writes here)."""

import ipaddress
from datetime import datetime, time, timedelta

from django.db.models import Count, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import TruncDate
from django.utils import timezone

from alerts.models import OPEN_STATES, AlertEvent, EventAudit, EventKind, Rule
from alerts.severity import Severity
from dashboard.filters import EventFilters
from scanner.models import Host, Network, Port, PortState, ScanPolicy, ScanRun, ScanShard


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
    if f.network_id is not None:
        qs = qs.filter(host__network_id=f.network_id)
    if f.host:
        net = ipaddress.ip_network(f.host, strict=False)
        if net.num_addresses == 1:
            qs = qs.filter(host__ip=str(net.network_address))
        else:
            # Host.ip is text: a CIDR becomes the host ids inside it (hosts are few
            # compared with events, and this keeps the event query on its indexes).
            ids = [
                pk
                for pk, ip in Host.objects.values_list("pk", "ip").iterator(chunk_size=5000)
                if ipaddress.ip_address(ip) in net
            ]
            qs = qs.filter(host_id__in=ids)
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
    qs = Host.objects.select_related("network").annotate(
        open_ports=Count("ports", filter=Q(ports__state=PortState.OPEN), distinct=True),
    )
    if q:
        qs = qs.filter(Q(ip__startswith=q) | Q(hostname__icontains=q))
    return qs.order_by("ip")


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
        "active": run.state in ("pending", "sweeping", "fingerprinting"),
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
