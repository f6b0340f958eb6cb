"""The outbox: one row per message to deliver (email, webhook or chat), consumed by the
sender; and the chat channels messages go to."""

from django.db import models
from django.utils import timezone


class Channel(models.TextChoices):
    EMAIL = "email", "email"
    WEBHOOK = "webhook", "webhook"
    CHAT = "chat", "chat"


class ChatChannel(models.Model):
    """A chat destination (an Apprise URL: Slack, Teams, DingTalk, WeCom, Feishu/Lark,
    JSON...) for one network owner's alerts, or for every network's."""

    name = models.SlugField(max_length=64, unique=True, help_text="used by `notify test NAME`")
    # A secret: it carries the service's token. Never shown in full (lists show url_masked);
    # set through alerts.notify.channels, which checks it and fills service and url_masked.
    url = models.TextField()
    service = models.CharField(max_length=64, editable=False)
    url_masked = models.CharField("URL (masked)", max_length=300, editable=False)
    owner_email = models.EmailField(
        blank=True,
        help_text="the network owner (Network.owner_email) whose events this channel gets; "
        "blank: every network's",
    )
    immediate = models.BooleanField(default=True, help_text="immediate alerts")
    digest = models.BooleanField(default=True, help_text="the daily digest's summary")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.service})"


class MessageKind(models.TextChoices):
    DIGEST = "digest", "daily digest"
    IMMEDIATE = "immediate", "immediate alert"


class MessageState(models.TextChoices):
    PENDING = "pending", "pending"
    SENT = "sent", "sent"
    # Gave up after MAX_ATTEMPTS (about a day of retries): visible, never silently dropped.
    FAILED = "failed", "failed"


class Message(models.Model):
    """A message to deliver; marked sent only after the SMTP server (or webhook) accepted it."""

    channel = models.CharField(max_length=16, choices=Channel.choices)
    # An email address, "webhook" (the URL is a secret: it stays in the settings), or the
    # chat channel's name (its URL is read from chat_channel when the message is sent).
    recipient = models.CharField(max_length=254)
    chat_channel = models.ForeignKey(
        ChatChannel, null=True, blank=True, on_delete=models.SET_NULL, related_name="messages"
    )
    kind = models.CharField(max_length=16, choices=MessageKind.choices)
    # Producing a message twice (a redelivered task, two workers) hits this key and is a no-op.
    dedupe_key = models.CharField(max_length=400, unique=True)
    subject = models.CharField(max_length=255, blank=True)
    text = models.TextField(blank=True)
    html = models.TextField(blank=True)
    # Webhook body, stored as sent: retries sign exactly the same bytes. Chat: the Apprise
    # notification type ({"type": "failure"}), title and text being subject and text.
    payload = models.TextField(blank=True)
    state = models.CharField(
        max_length=16, choices=MessageState.choices, default=MessageState.PENDING
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    # Due time; while a sender holds a message it is moved into the future (the claim lease).
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_error = models.TextField(blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # The period a digest covers: the next digest starts where this one ended.
    period_start = models.DateTimeField(null=True, blank=True)
    period_end = models.DateTimeField(null=True, blank=True)
    events = models.ManyToManyField(
        "alerts.AlertEvent", through="MessageEvent", related_name="messages", blank=True
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["state", "next_attempt_at"]),
            models.Index(fields=["kind", "channel", "recipient", "period_end"]),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.channel} to {self.recipient} ({self.state})"


class MessageEvent(models.Model):
    """Which events a message tells about: an event is notified once one of them is sent."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="links")
    event = models.ForeignKey(
        "alerts.AlertEvent", on_delete=models.CASCADE, related_name="message_links"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["message", "event"], name="uniq_message_event")
        ]

    def __str__(self) -> str:
        return f"message {self.message_id} / event {self.event_id}"
