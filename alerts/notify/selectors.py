"""Reads for notifications: who gets what, which events a period holds, what was notified."""

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Exists, OuterRef, Q, QuerySet

from alerts.models import OPEN_STATES, AlertEvent, EventState
from alerts.notify.content import SECTION_LIMIT, BaselineItem, Item, RunItem, Section, open_section
from alerts.notify.models import ChatChannel, Message, MessageEvent, MessageKind, MessageState
from scanner.models import Network, ScanRun

logger = logging.getLogger(__name__)

DIGEST_DEFAULT_PERIOD = timedelta(hours=24)


def site_url() -> str:
    return settings.SITE_URL.rstrip("/")


def global_recipients() -> list[str]:
    """PORTMON_DIGEST_RECIPIENTS, lower-cased, without duplicates, in the given order."""
    raw = settings.PORTMON_DIGEST_RECIPIENTS
    if isinstance(raw, str):
        raw = raw.split(",")
    seen: dict[str, None] = {}
    for address in raw:
        address = address.strip().lower()
        if address:
            seen.setdefault(address, None)
    return list(seen)


def digest_recipients() -> dict[str, frozenset[int] | None]:
    """{email: network ids it owns, or None for everything (a global recipient)}."""
    result: dict[str, frozenset[int] | None] = {a: None for a in global_recipients()}
    owned = _owned_networks()
    for owner, net_ids in sorted(owned.items()):
        if owner not in result:
            result[owner] = frozenset(net_ids)
    return result


def _owned_networks() -> dict[str, set[int]]:
    owned: dict[str, set[int]] = {}
    for net_id, owner in Network.objects.exclude(owner_email="").values_list("id", "owner_email"):
        owned.setdefault(owner.strip().lower(), set()).add(net_id)
    return owned


def chat_channels_immediate() -> list[ChatChannel]:
    """Enabled channels that take immediate alerts (owner_email lower-cased)."""
    channels = list(ChatChannel.objects.filter(enabled=True, immediate=True).order_by("id"))
    for channel in channels:
        channel.owner_email = channel.owner_email.strip().lower()
    return channels


def chat_channels_digest() -> list[tuple[ChatChannel, frozenset[int] | None]]:
    """Enabled channels that take the digest, each with the network ids its owner owns
    (None for a channel without owner: every network)."""
    owned = _owned_networks()
    return [
        (c, frozenset(owned.get(c.owner_email.strip().lower(), ())) if c.owner_email else None)
        for c in ChatChannel.objects.filter(enabled=True, digest=True).order_by("id")
    ]


def digest_period_start(*, channel: str, recipient: str, end: datetime) -> datetime:
    """Where the next digest for this recipient starts: the previous one's end, or end - 24 h."""
    previous = (
        Message.objects.filter(
            kind=MessageKind.DIGEST, channel=channel, recipient=recipient, period_end__lte=end
        )
        .order_by("-period_end")
        .values_list("period_end", flat=True)
        .first()
    )
    return previous or end - DIGEST_DEFAULT_PERIOD


def event_item(event: AlertEvent, *, base_url: str) -> Item:
    """The plain view of an event (host, network and rule must be select_related)."""
    network = event.host.network
    rule = event.rule
    return Item(
        event_id=event.pk,
        kind=event.kind,
        ip=event.host.ip,
        proto=event.proto,
        port=event.port,
        network=network.cidr if network else "",
        state=event.state,
        created_at=event.created_at,
        url=base_url + event.get_absolute_url(),
        detail=event.detail if isinstance(event.detail, dict) else {},
        suppressed=event.suppressed,
        rule_action=rule.action if rule else "",
        rule_reason=rule.reason if rule else "",
        rule_owner=rule.owner if rule else "",
        severity=event.severity,
    )


def events_for_notification(queryset: QuerySet) -> QuerySet:
    return queryset.select_related("host__network", "rule")


def digest_items(
    *, start: datetime, end: datetime, network_ids: Iterable[int] | None
) -> list[Item]:
    """Events created in [start, end), or raised then by the diff of an older run (an
    import of last week's file: dated by its run, it alerts through this digest), limited
    to some networks (None: all)."""
    events = AlertEvent.objects.filter(
        Q(created_at__gte=start, created_at__lt=end)
        | Q(run__diffed_at__gte=start, run__diffed_at__lt=end)
    )
    if network_ids is not None:
        events = events.filter(host__network_id__in=list(network_ids))
    base_url = site_url()
    return [
        event_item(e, base_url=base_url)
        for e in events_for_notification(events).order_by("created_at", "id")
    ]


def _open_events(network_ids: Iterable[int] | None) -> QuerySet:
    """Open, unsuppressed events (of some networks; None: all)."""
    events = AlertEvent.objects.filter(state__in=list(OPEN_STATES), suppressed=False)
    if network_ids is not None:
        events = events.filter(host__network_id__in=list(network_ids))
    return events


def still_open(
    *, before: datetime, network_ids: Iterable[int] | None, limit: int = SECTION_LIMIT
) -> Section | None:
    """Open events raised before `before`, oldest first (at most `limit` of them listed)."""
    events = _open_events(network_ids).filter(created_at__lt=before)
    base_url = site_url()
    items = [
        event_item(e, base_url=base_url)
        for e in events_for_notification(events).order_by("created_at", "id")[:limit]
    ]
    total = len(items) if len(items) < limit else events.count()
    return open_section(items, total)


def open_totals(*, network_ids: Iterable[int] | None) -> dict[int, int]:
    """{severity: number of open, unsuppressed events} (of some networks; None: all)."""
    rows = _open_events(network_ids).values("severity").annotate(n=Count("id")).order_by()
    return {row["severity"]: row["n"] for row in rows}


def degraded_runs(*, start: datetime, end: datetime) -> list[RunItem]:
    runs = ScanRun.objects.filter(degraded=True, created_at__gte=start, created_at__lt=end)
    return [
        RunItem(
            run_id=r.pk,
            created_at=r.created_at,
            targets=r.targets,
            hosts_found=r.hosts_found,
            ports_found=r.ports_found,
        )
        for r in runs.order_by("created_at", "id").only(
            "id", "created_at", "targets", "hosts_found", "ports_found"
        )
    ]


def baselines(
    *, start: datetime, end: datetime, network_ids: Iterable[int] | None
) -> list[BaselineItem]:
    """Baselines recorded by runs diffed in [start, end) (when the diff recorded them, so an
    import of an old file shows in today's digest), limited to some networks (None: all)."""
    wanted = None if network_ids is None else set(network_ids)
    # Runs diffed in a day are few: the empty lists are skipped here, not in JSON SQL.
    runs = ScanRun.objects.filter(diffed_at__gte=start, diffed_at__lt=end)
    return [
        BaselineItem(run_id=pk, network=line["network"], ports=line["ports"], hosts=line["hosts"])
        for pk, lines in runs.order_by("id").values_list("id", "baseline")
        for line in lines
        if wanted is None or line.get("network_id") in wanted
    ]


def events_with_notified(queryset: QuerySet) -> QuerySet:
    """Annotate `notified`: True once any message telling about the event was sent."""
    sent = MessageEvent.objects.filter(event=OuterRef("pk"), message__state=MessageState.SENT)
    return queryset.annotate(notified=Exists(sent))


def immediate_pending_event_ids(*, since: datetime) -> list[int]:
    """Immediate, unsuppressed events, new or reopened since `since`, without their alert.

    A reopened event (fixed, then seen again) needs a new alert: only messages queued after
    the reopening (its updated_at) count for it.
    """
    has_alert = MessageEvent.objects.filter(
        event=OuterRef("pk"), message__kind=MessageKind.IMMEDIATE
    ).filter(Q(event__state=EventState.NEW) | Q(message__created_at__gte=OuterRef("updated_at")))
    return list(
        AlertEvent.objects.filter(immediate=True, suppressed=False)
        .filter(
            Q(state=EventState.NEW, created_at__gte=since)
            | Q(state=EventState.REOPENED, updated_at__gte=since)
        )
        .exclude(Exists(has_alert))
        .order_by("id")
        .values_list("id", flat=True)
    )
