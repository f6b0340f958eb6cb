"""Delivery: claim due messages, send them (email, webhook, chat), mark them sent or
schedule the retry; a person's retry now."""

import logging
import smtplib
import socket
import urllib.error
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.mail import get_connection
from django.core.mail.backends.base import BaseEmailBackend
from django.db.models import F
from django.utils import timezone

from alerts.notify import channels, transports
from alerts.notify.chat import ChatError
from alerts.notify.content import MAX_ATTEMPTS, retry_delay
from alerts.notify.models import Channel, Message, MessageState
from alerts.notify.services.outbox import webhook_url

logger = logging.getLogger(__name__)


# A claimed message is invisible to other senders for this long. It must exceed the longest
# send (SMTP timeout 30 s, webhook timeout 10 s); a sender that dies mid-send is retried after.
CLAIM_LEASE = timedelta(minutes=10)
# Messages per send pass; one pass runs every minute and anything left over is due in the
# next. Measured: 51 digests (5,000 events, the largest 140 KB) to a local aiosmtpd in 0.4 s.
SEND_BATCH = 200


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


def _deliver(message: Message, connection: BaseEmailBackend | None) -> None:
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
        url = webhook_url()
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


def _close_quietly(connection: BaseEmailBackend) -> None:
    try:
        connection.close()
    except Exception:  # a broken session must not hide the real error
        logger.debug("closing the mail connection failed", exc_info=True)


# --- Schedule ------------------------------------------------------------------------


def messages_retry_now(*, message_ids: Iterable[int], now: datetime | None = None) -> int:
    """Make unsent messages (pending or given up) due now; sent ones are never resent."""
    now = now or timezone.now()
    return (
        Message.objects.filter(pk__in=list(message_ids))
        .exclude(state=MessageState.SENT)
        .update(state=MessageState.PENDING, next_attempt_at=now)
    )
