"""Writes for notifications: produce outbox messages (idempotent) and deliver due ones."""

import json
import logging
import smtplib
import socket
import urllib.error
from dataclasses import dataclass
from datetime import datetime, timedelta

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.mail import get_connection
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from alerts.models import AlertEvent, EventState
from alerts.notify import channels, selectors, transports
from alerts.notify.chat import ChatError
from alerts.notify.content import (
    MAX_ATTEMPTS,
    SEVERITY_COLOURS,
    SEVERITY_LABELS,
    Digest,
    Item,
    digest_build,
    retry_delay,
)
from alerts.notify.models import Channel, Message, MessageEvent, MessageKind, MessageState
from alerts.notify.sections import section_read
from alerts.notify.templating import email_render

logger = logging.getLogger(__name__)

# A claimed message is invisible to other senders for this long. It must exceed the longest
# send (SMTP timeout 30 s, webhook timeout 10 s); a sender that dies mid-send is retried after.
CLAIM_LEASE = timedelta(minutes=10)
# Messages per send pass; one pass runs every minute and anything left over is due in the
# next. Measured: 51 digests (5,000 events, the largest 140 KB) to a local aiosmtpd in 0.4 s.
SEND_BATCH = 200
# Immediate events older than this are left to the digest (e.g. after a long outage).
IMMEDIATE_SWEEP_WINDOW = timedelta(hours=24)
# Webhook messages name the channel, not the URL: chat webhook URLs are secrets (they carry
# a token), so the URL stays in the settings and is read when the message is sent.
WEBHOOK_RECIPIENT = "webhook"


def _fmt(value: datetime) -> str:
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M %Z")


def _webhook_url() -> str:
    return settings.PORTMON_WEBHOOK_URL


def _item_json(item: Item) -> dict:
    return {
        "id": item.event_id,
        "kind": item.kind,
        "ip": item.ip,
        "port": item.port,
        "proto": item.proto,
        "network": item.network,
        "state": item.state,
        "summary": item.summary,
        "suppressed": item.suppressed,
        "rule": item.rule_text,
        "created_at": item.created_at.isoformat(),
        "url": item.url,
    }


def _dumps(payload: dict) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


# --- The digest ----------------------------------------------------------------------


def digest_prepare(
    *, recipient: str, network_ids: frozenset[int] | None, channel: str, now: datetime
) -> Digest:
    """Gather one recipient's digest for the period ending now (reads only)."""
    start = selectors.digest_period_start(channel=channel, recipient=recipient, end=now)
    return digest_build(
        recipient=recipient,
        period_start=start,
        period_end=now,
        items=selectors.digest_items(start=start, end=now, network_ids=network_ids),
        degraded_runs=selectors.degraded_runs(start=start, end=now),
        site_url=selectors.site_url(),
        agent_checks=section_read("agent_checks", network_ids=network_ids),
        baselines=selectors.baselines(start=start, end=now, network_ids=network_ids),
        still_open=selectors.still_open(before=start, network_ids=network_ids),
        open_totals=selectors.open_totals(network_ids=network_ids),
    )


def _period_text(digest: Digest) -> str:
    span = digest.period_end - digest.period_start
    if span <= timedelta(hours=25):
        return "in the last 24 hours"
    return f"since {_fmt(digest.period_start)}"


def digest_render(*, digest: Digest) -> tuple[str, str, str]:
    """(subject, text, html) of a digest."""
    period_text = _period_text(digest)
    context = {
        "digest": digest,
        "date": timezone.localdate(digest.period_end).isoformat(),
        "period_text": period_text,
        "site_url": digest.site_url,
        "fmt": _fmt,
        "now": digest.period_end,
        "colours": SEVERITY_COLOURS,
        "labels": SEVERITY_LABELS,
    }
    return email_render("digest", context)


def _message_create(*, message: Message, event_ids) -> Message | None:
    """Insert a message with its event links; None when its dedupe key already exists."""
    try:
        with transaction.atomic():
            message.save(force_insert=True)
            MessageEvent.objects.bulk_create(
                [MessageEvent(message=message, event_id=e) for e in event_ids], batch_size=1000
            )
    except IntegrityError:
        if Message.objects.filter(dedupe_key=message.dedupe_key).exists():
            return None
        raise
    return message


def digest_queue(*, now: datetime | None = None) -> list[Message]:
    """Create today's digest messages (one per recipient, plus the webhook and the chat
    channels); idempotent."""
    now = now or timezone.now()
    day = timezone.localdate(now).isoformat()
    targets = [
        (Channel.EMAIL, address, network_ids, None)
        for address, network_ids in selectors.digest_recipients().items()
    ]
    if _webhook_url():
        targets.append((Channel.WEBHOOK, WEBHOOK_RECIPIENT, None, None))
    targets.extend(
        (Channel.CHAT, chat.name, network_ids, chat)
        for chat, network_ids in selectors.chat_channels_digest()
    )
    created = []
    for channel, recipient, network_ids, chat in targets:
        key = f"digest:{day}:{channel}:{chat.pk if chat else recipient}"
        if Message.objects.filter(dedupe_key=key).exists():
            continue
        digest = digest_prepare(
            recipient=recipient, network_ids=network_ids, channel=channel, now=now
        )
        subject, text, html = digest_render(digest=digest)
        if chat is not None:
            # A summary where people talk: nothing to say is not worth a message a day.
            if digest.empty and not digest.still_open:
                continue
            body, notify_type = channels.digest_body(
                digest=digest, period_text=_period_text(digest)
            )
            message = channels.chat_message(
                channel=chat,
                kind=MessageKind.DIGEST,
                dedupe_key=key,
                title=subject,
                body=body,
                notify_type=notify_type,
                now=now,
            )
            message.period_start, message.period_end = digest.period_start, digest.period_end
            if _message_create(message=message, event_ids=digest.event_ids):
                created.append(message)
            continue
        message = Message(
            channel=channel,
            recipient=recipient,
            kind=MessageKind.DIGEST,
            dedupe_key=key,
            subject=subject,
            created_at=now,
            next_attempt_at=now,
            period_start=digest.period_start,
            period_end=digest.period_end,
        )
        if channel == Channel.EMAIL:
            message.text, message.html = text, html
        else:
            items = [i for s in digest.sections for i in s.items]
            unique = {i.event_id: i for i in items}.values()
            message.payload = _dumps(
                {
                    "type": "digest",
                    "subject": subject,
                    "text": text,
                    "period_start": digest.period_start.isoformat(),
                    "period_end": digest.period_end.isoformat(),
                    "counts": digest.counts,
                    "degraded_runs": [r.run_id for r in digest.degraded_runs],
                    "events": [_item_json(i) for i in unique],
                }
            )
        if _message_create(message=message, event_ids=digest.event_ids):
            created.append(message)
    logger.info("digest %s: %d messages queued", day, len(created))
    return created


# --- Immediate alerts ------------------------------------------------------------------


def immediate_queue(*, event_ids, now: datetime | None = None) -> int:
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
    webhook = bool(_webhook_url())
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
            "immediate", {"item": item, "site_url": base_url, "fmt": _fmt}
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
                message.payload = _dumps(
                    {
                        "type": "immediate",
                        "subject": subject,
                        "text": f"{subject}\n{item.url}",
                        "event": _item_json(item),
                    }
                )
            if _message_create(message=message, event_ids=[event.pk]):
                created += 1
        if to_chat:
            body, notify_type = channels.immediate_body(item=item, fmt=_fmt)
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
            if _message_create(message=message, event_ids=[event.pk]):
                created += 1
    return created


def immediate_sweep(*, now: datetime | None = None) -> int:
    """Queue alerts for immediate events nobody queued (a missed call, a crash); idempotent."""
    now = now or timezone.now()
    ids = selectors.immediate_pending_event_ids(since=now - IMMEDIATE_SWEEP_WINDOW)
    return immediate_queue(event_ids=ids, now=now) if ids else 0


# --- Delivery ------------------------------------------------------------------------


@dataclass
class SendReport:
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    skipped: int = 0


def _unreachable(exc: BaseException) -> bool:
    """The server could not be reached at all: the rest of the batch would fail the same way."""
    return isinstance(
        exc,
        ConnectionError
        | TimeoutError
        | socket.gaierror
        | smtplib.SMTPConnectError
        | smtplib.SMTPServerDisconnected,
    ) or isinstance(exc, urllib.error.URLError)


def message_claim(*, message_id: int, now: datetime) -> Message | None:
    """Take a due message for sending; None when another sender has it or it is not due.

    The conditional UPDATE moves it out of "due" for CLAIM_LEASE: exactly one sender wins.
    """
    claimed = Message.objects.filter(
        pk=message_id, state=MessageState.PENDING, next_attempt_at__lte=now
    ).update(next_attempt_at=now + CLAIM_LEASE, attempts=F("attempts") + 1)
    if claimed != 1:
        return None
    return Message.objects.select_related("chat_channel").get(pk=message_id)


def message_mark_sent(*, message: Message, now: datetime) -> None:
    Message.objects.filter(pk=message.pk, state=MessageState.PENDING).update(
        state=MessageState.SENT, sent_at=now, last_error=""
    )


def message_mark_failed(*, message: Message, error: str, now: datetime) -> str:
    """Schedule the retry with backoff, or give up after MAX_ATTEMPTS; returns the new state."""
    state = MessageState.FAILED if message.attempts >= MAX_ATTEMPTS else MessageState.PENDING
    Message.objects.filter(pk=message.pk, state=MessageState.PENDING).update(
        state=state,
        next_attempt_at=now + retry_delay(message.attempts),
        last_error=error[:2000],
    )
    return state


def _deliver(message: Message, connection) -> None:
    if message.channel == Channel.EMAIL:
        email = transports.email_build(
            to=message.recipient,
            subject=message.subject,
            text=message.text,
            html=message.html,
            message_id=f"portmon.{message.pk}",
            connection=connection,
        )
        transports.email_send(email)
    elif message.channel == Channel.WEBHOOK:
        url = _webhook_url()
        if not url:
            raise transports.WebhookError("PORTMON_WEBHOOK_URL is not set")
        transports.webhook_post(
            url=url,
            body=message.payload.encode(),
            secret=settings.PORTMON_WEBHOOK_SECRET,
            timeout=float(settings.PORTMON_WEBHOOK_TIMEOUT),
            allow_local=settings.PORTMON_WEBHOOK_ALLOW_LOCAL,
        )
    elif message.channel == Channel.CHAT:
        channels.chat_deliver(message)
    else:
        raise ValueError(f"unknown channel {message.channel!r}")


def messages_send_due(*, now: datetime | None = None, limit: int = SEND_BATCH) -> SendReport:
    """Send every due message once; each is marked sent only after the server accepted it."""
    now = now or timezone.now()
    report = SendReport()
    due = list(
        Message.objects.filter(state=MessageState.PENDING, next_attempt_at__lte=now)
        .order_by("next_attempt_at", "id")
        .values_list("id", "channel", "chat_channel_id")[:limit]
    )
    unreachable: set[str] = set()
    connection = None
    try:
        for message_id, channel, chat_id in due:
            # Each chat channel is its own server: one that failed waits for the next pass
            # (a hanging one costs one timeout per pass, not one per message).
            destination = f"chat:{chat_id}" if channel == Channel.CHAT else channel
            if destination in unreachable:
                report.skipped += 1
                continue
            message = message_claim(message_id=message_id, now=now)
            if message is None:
                report.skipped += 1
                continue
            try:
                if channel == Channel.EMAIL and connection is None:
                    # One SMTP session for the whole batch.
                    connection = get_connection(fail_silently=False)
                    connection.open()
                _deliver(message, connection)
            except SoftTimeLimitExceeded:
                # The task is out of time: stop here; the claim lease makes it due again.
                raise
            except Exception as exc:  # any failure means: retry later
                if connection is not None and channel == Channel.EMAIL:
                    _close_quietly(connection)
                    connection = None
                error = f"{type(exc).__name__}: {exc}"
                state = message_mark_failed(message=message, error=error, now=now)
                logger.warning(
                    "message %s (%s to %s) attempt %d failed: %s",
                    message.pk,
                    message.channel,
                    message.recipient,
                    message.attempts,
                    error,
                )
                if state == MessageState.FAILED:
                    report.failed += 1
                else:
                    report.retrying += 1
                if _unreachable(exc) or isinstance(exc, ChatError):
                    unreachable.add(destination)
            else:
                message_mark_sent(message=message, now=now)
                report.sent += 1
    finally:
        if connection is not None:
            _close_quietly(connection)
    return report


def _close_quietly(connection) -> None:
    try:
        connection.close()
    except Exception:  # a broken session must not hide the real error
        logger.debug("closing the mail connection failed", exc_info=True)


# --- Schedule ------------------------------------------------------------------------


def messages_retry_now(*, message_ids, now: datetime | None = None) -> int:
    """Make unsent messages (pending or given up) due now; sent ones are never resent."""
    now = now or timezone.now()
    return (
        Message.objects.filter(pk__in=list(message_ids))
        .exclude(state=MessageState.SENT)
        .update(state=MessageState.PENDING, next_attempt_at=now)
    )
