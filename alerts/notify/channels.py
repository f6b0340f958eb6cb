"""Chat channels: their writes (URL checked, secret kept), what a chat message says, its
delivery and the test message. The outbox (services) queues and retries chat messages like
emails."""

import json
from collections.abc import Callable
from datetime import datetime

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email, validate_slug
from django.db import transaction
from django.utils import timezone

from alerts.notify import chat
from alerts.notify.chat import ChatError, ChatUrl
from alerts.notify.content import Digest, Item, digest_top
from alerts.notify.models import Channel, ChatChannel, Message
from alerts.notify.templating import chat_render
from alerts.severity import Severity

# Events a chat digest lists (the worst first); chat is a summary, the email has them all.
CHAT_DIGEST_ITEMS = 10
# Apprise notification types: how a chat service colours the message.
NOTIFY_TYPES: dict[int, str] = {
    Severity.CRITICAL: "failure",
    Severity.HIGH: "failure",
    Severity.MEDIUM: "warning",
    Severity.LOW: "info",
}


def _timeout() -> float:
    return float(settings.PORTMON_WEBHOOK_TIMEOUT)


def chat_url_validate(url: str) -> ChatUrl:
    """Check a channel URL (service known, destination allowed); ValidationError if not."""
    try:
        return chat.chat_url_check(url, allow_local=settings.PORTMON_WEBHOOK_ALLOW_LOCAL)
    except ChatError as exc:
        raise ValidationError({"url": str(exc)}) from None


def chat_channel_set_url(channel: ChatChannel, *, url: str) -> None:
    """Put a checked URL on a channel (not saved): the URL, and what may be shown of it."""
    checked = chat_url_validate(url)
    channel.url = url.strip()
    channel.service = checked.service
    channel.url_masked = checked.masked


def chat_channel_create(
    *, name: str, url: str, owner_email: str = "", immediate: bool = True, digest: bool = True
) -> ChatChannel:
    errors = {}
    try:
        validate_slug(name)
    except ValidationError:
        errors["name"] = f"{name!r}: letters, digits, - and _ only"
    owner_email = owner_email.strip().lower()
    if owner_email:
        try:
            validate_email(owner_email)
        except ValidationError:
            errors["owner_email"] = f"not an email address: {owner_email!r}"
    if ChatChannel.objects.filter(name=name).exists():
        errors["name"] = f"a channel named {name!r} exists already"
    if errors:
        raise ValidationError(errors)
    channel = ChatChannel(name=name, owner_email=owner_email, immediate=immediate, digest=digest)
    chat_channel_set_url(channel, url=url)
    channel.save()
    return channel


def chat_channel_delete(*, name: str) -> bool:
    """Delete a channel; its unsent messages are dropped with it (sent ones stay)."""
    with transaction.atomic():
        channel = ChatChannel.objects.filter(name=name).first()
        if channel is None:
            return False
        Message.objects.filter(chat_channel=channel).exclude(state="sent").delete()
        channel.delete()
    return True


# --- What a chat message says -----------------------------------------------------------


def chat_message(
    *,
    channel: ChatChannel,
    kind: str,
    dedupe_key: str,
    title: str,
    body: str,
    notify_type: str,
    now: datetime,
) -> Message:
    """An unsaved outbox row for a chat channel."""
    return Message(
        channel=Channel.CHAT,
        recipient=channel.name,
        chat_channel=channel,
        kind=kind,
        dedupe_key=dedupe_key,
        subject=title,
        text=body,
        payload=json.dumps({"type": notify_type}),
        created_at=now,
        next_attempt_at=now,
    )


def immediate_body(*, item: Item, fmt: Callable[[datetime], str]) -> tuple[str, str]:
    """(text, Apprise type) of an immediate alert in chat."""
    text = chat_render("immediate", {"item": item, "fmt": fmt})
    return text, NOTIFY_TYPES.get(item.severity, "warning")


def digest_body(*, digest: Digest, period_text: str) -> tuple[str, str]:
    """(text, Apprise type) of a digest's chat summary: totals and the worst events."""
    top, more = digest_top(digest, limit=CHAT_DIGEST_ITEMS)
    text = chat_render(
        "digest",
        {
            "digest": digest,
            "top": top,
            "more": more,
            "now": digest.period_end,
            "period_text": period_text,
            "site_url": digest.site_url,
        },
    )
    worst = max((sev for sev, _count in digest.open_totals), default=Severity.LOW)
    return text, "warning" if worst >= Severity.HIGH else "info"


# --- Delivery ---------------------------------------------------------------------------


def chat_deliver(message: Message) -> None:
    """Send an outbox row to its channel; returns only when the service accepted it."""
    channel = message.chat_channel
    if channel is None:
        raise ChatError(f"chat channel {message.recipient!r} was deleted")
    if not channel.enabled:
        raise ChatError(f"chat channel {channel.name!r} is disabled")
    notify_type = json.loads(message.payload or "{}").get("type", "info")
    chat.chat_send(
        url=channel.url,
        title=message.subject,
        body=message.text,
        notify_type=notify_type,
        timeout=_timeout(),
        allow_local=settings.PORTMON_WEBHOOK_ALLOW_LOCAL,
    )


def chat_channel_test(*, channel: ChatChannel | None = None, url: str = "") -> ChatUrl:
    """Send a test message now (not through the outbox): to a channel, or to a URL not
    saved yet. Returns what may be shown of the URL; raises ChatError saying why not."""
    url = channel.url if channel is not None else url
    checked = chat.chat_url_check(url, allow_local=settings.PORTMON_WEBHOOK_ALLOW_LOCAL)
    name = channel.name if channel is not None else checked.masked
    owner = (channel.owner_email if channel is not None else "") or "every network"
    chat.chat_send(
        url=url,
        title="[Portmon] Test message",
        body=(
            f"Portmon can reach this channel ({name}, alerts for {owner}); "
            f"sent at {timezone.now():%Y-%m-%d %H:%M %Z}."
        ),
        notify_type="info",
        timeout=_timeout(),
        allow_local=settings.PORTMON_WEBHOOK_ALLOW_LOCAL,
    )
    return checked
