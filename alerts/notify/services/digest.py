"""The daily digest: gathered per recipient, rendered, queued once a day per recipient,
webhook and chat channel (idempotent)."""

import logging
from datetime import datetime, timedelta

from django.utils import timezone

from alerts.notify import channels, selectors
from alerts.notify.content import SEVERITY_COLOURS, SEVERITY_LABELS, Digest, digest_build
from alerts.notify.models import Channel, ChatChannel, Message, MessageKind
from alerts.notify.sections import section_read
from alerts.notify.services.outbox import (
    WEBHOOK_RECIPIENT,
    fmt,
    item_json,
    message_create,
    payload_json,
    webhook_url,
)
from alerts.notify.templating import email_render

logger = logging.getLogger(__name__)


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
    return f"since {fmt(digest.period_start)}"


def digest_render(*, digest: Digest) -> tuple[str, str, str]:
    """(subject, text, html) of a digest."""
    period_text = _period_text(digest)
    context = {
        "digest": digest,
        "date": timezone.localdate(digest.period_end).isoformat(),
        "period_text": period_text,
        "site_url": digest.site_url,
        "fmt": fmt,
        "now": digest.period_end,
        "colours": SEVERITY_COLOURS,
        "labels": SEVERITY_LABELS,
    }
    return email_render("digest", context)


def digest_queue(*, now: datetime | None = None) -> list[Message]:
    """Create today's digest messages (one per recipient, plus the webhook and the chat
    channels); idempotent."""
    now = now or timezone.now()
    day = timezone.localdate(now).isoformat()
    # (channel, recipient, the networks it follows (None: all), its chat channel if a chat)
    targets: list[tuple[str, str, frozenset[int] | None, ChatChannel | None]] = [
        (Channel.EMAIL, address, network_ids, None)
        for address, network_ids in selectors.digest_recipients().items()
    ]
    if webhook_url():
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
            if message_create(message=message, event_ids=digest.event_ids):
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
            message.payload = payload_json(
                {
                    "type": "digest",
                    "subject": subject,
                    "text": text,
                    "period_start": digest.period_start.isoformat(),
                    "period_end": digest.period_end.isoformat(),
                    "counts": digest.counts,
                    "degraded_runs": [r.run_id for r in digest.degraded_runs],
                    "events": [item_json(i) for i in unique],
                }
            )
        if message_create(message=message, event_ids=digest.event_ids):
            created.append(message)
    logger.info("digest %s: %d messages queued", day, len(created))
    return created
