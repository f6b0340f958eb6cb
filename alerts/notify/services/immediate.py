"""Immediate alerts: one message per (event, reopening, recipient), queued when events
are raised, and a sweep for the ones nobody queued."""

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from alerts.models import AlertEvent, EventState
from alerts.notify import channels, selectors
from alerts.notify.models import Channel, Message, MessageKind
from alerts.notify.services.outbox import (
    WEBHOOK_RECIPIENT,
    fmt,
    item_json,
    message_create,
    payload_json,
    webhook_url,
)
from alerts.notify.templating import email_render

# Immediate events older than this are left to the digest (e.g. after a long outage).
IMMEDIATE_SWEEP_WINDOW = timedelta(hours=24)


def immediate_queue(*, event_ids: Iterable[int], now: datetime | None = None) -> int:
    """Queue alerts for immediate, unsuppressed, new or reopened events (owner + global
    recipients + webhook).

    Idempotent: an (event, reopening, recipient) that already has a message is skipped.
    Returns the number of messages created.
    """
    now = now or timezone.now()
    event_ids = list(event_ids)
    if not event_ids:
        return 0
    # An old run's events (an import of last week's file) are history: digest only.
    oldest = now - timedelta(hours=settings.PORTMON_IMMEDIATE_MAX_AGE_HOURS)
    events = selectors.events_for_notification(
        AlertEvent.objects.filter(
            Q(run__isnull=True)
            | Q(run__finished_at__isnull=True)
            | Q(run__finished_at__gte=oldest),
            pk__in=event_ids,
            immediate=True,
            suppressed=False,
            state__in=[EventState.NEW, EventState.REOPENED],
        )
    ).order_by("id")
    global_to = selectors.global_recipients()
    webhook = bool(webhook_url())
    chats = selectors.chat_channels_immediate()
    base_url = selectors.site_url()
    created = 0
    for event in events:
        item = selectors.event_item(event, base_url=base_url)
        owner = (event.host.network.owner_email if event.host.network else "").strip().lower()
        recipients = list(dict.fromkeys([*([owner] if owner else []), *global_to]))
        targets = [(Channel.EMAIL, r, f"email:{r}") for r in recipients]
        if webhook:
            targets.append((Channel.WEBHOOK, WEBHOOK_RECIPIENT, WEBHOOK_RECIPIENT))
        # Chat: the owner's channels and the channels without owner (every network's).
        to_chat = [c for c in chats if c.owner_email in ("", owner)]
        if not targets and not to_chat:
            continue
        subject, text, html = email_render(
            "immediate", {"item": item, "site_url": base_url, "fmt": fmt}
        )
        # A reopened event alerts again, once per reopening.
        cycle = (
            f":reopened:{event.updated_at:%Y%m%dT%H%M%S.%f}"
            if event.state == EventState.REOPENED
            else ""
        )
        for channel, recipient, who in targets:
            message = Message(
                channel=channel,
                recipient=recipient,
                kind=MessageKind.IMMEDIATE,
                dedupe_key=f"immediate:event:{event.pk}{cycle}:{who}",
                subject=subject,
                created_at=now,
                next_attempt_at=now,
            )
            if channel == Channel.EMAIL:
                message.text, message.html = text, html
            else:
                message.payload = payload_json(
                    {
                        "type": "immediate",
                        "subject": subject,
                        "text": f"{subject}\n{item.url}",
                        "event": item_json(item),
                    }
                )
            if message_create(message=message, event_ids=[event.pk]):
                created += 1
        if to_chat:
            body, notify_type = channels.immediate_body(item=item, fmt=fmt)
        for chat in to_chat:
            message = channels.chat_message(
                channel=chat,
                kind=MessageKind.IMMEDIATE,
                dedupe_key=f"immediate:event:{event.pk}{cycle}:chat:{chat.pk}",
                title=subject,
                body=body,
                notify_type=notify_type,
                now=now,
            )
            if message_create(message=message, event_ids=[event.pk]):
                created += 1
    return created


def immediate_sweep(*, now: datetime | None = None) -> int:
    """Queue alerts for immediate events nobody queued (a missed call, a crash); idempotent."""
    now = now or timezone.now()
    ids = selectors.immediate_pending_event_ids(since=now - IMMEDIATE_SWEEP_WINDOW)
    return immediate_queue(event_ids=ids, now=now) if ids else 0
