"""The outbox: messages inserted once (their dedupe key), their JSON payloads, and what
the digest and immediate alerts share (dates in the local zone, the webhook's URL)."""

import json
from collections.abc import Iterable
from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from alerts.notify.content import Item
from alerts.notify.models import Message, MessageEvent

# Webhook messages name the channel, not the URL: chat webhook URLs are secrets (they carry
# a token), so the URL stays in the settings and is read when the message is sent.
WEBHOOK_RECIPIENT = "webhook"


def fmt(value: datetime) -> str:
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M %Z")


def webhook_url() -> str:
    return settings.PORTMON_WEBHOOK_URL


def item_json(item: Item) -> dict:
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


def payload_json(payload: dict) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def message_create(*, message: Message, event_ids: Iterable[int]) -> Message | None:
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
