from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest

from alerts.notify import channels
from alerts.notify.chat import ChatError
from alerts.notify.models import ChatChannel, Message
from alerts.notify.services.delivery import messages_retry_now


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = (
        "created_at",
        "kind",
        "channel",
        "recipient",
        "subject",
        "state",
        "attempts",
        "next_attempt_at",
        "sent_at",
    )
    list_filter = ("state", "kind", "channel")
    search_fields = ("recipient", "subject", "dedupe_key")
    date_hierarchy = "created_at"
    # The outbox is a record of what was (or will be) said: read-only, except "retry now".
    readonly_fields = [f.name for f in Message._meta.fields]
    actions = ["retry_now"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Message | None = None) -> bool:
        return False

    @admin.action(description="Retry now (unsent messages only)")
    def retry_now(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        count = messages_retry_now(message_ids=queryset.values_list("pk", flat=True))
        self.message_user(request, f"{count} messages are due now.")


class ChatChannelForm(forms.ModelForm):
    """The URL is write-only: never sent back to the browser; blank keeps the saved one."""

    new_url = forms.CharField(
        label="URL",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"size": 80}),
        help_text="An Apprise URL, e.g. slack://TokenA/TokenB/TokenC, "
        "dingtalk://token/, wecombot://key, feishu://token, workflows://host/... (Teams), "
        "json://host/path. Saved ones are never shown; leave blank to keep it.",
    )

    class Meta:
        model = ChatChannel
        fields = ("name", "new_url", "owner_email", "immediate", "digest", "enabled")

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        url = cleaned.get("new_url")
        if not url and not self.instance.url:
            self.add_error("new_url", "A new channel needs its URL.")
        elif url:
            try:
                channels.chat_channel_set_url(self.instance, url=url)
            except ValidationError as exc:
                self.add_error("new_url", exc.message_dict["url"])
        if cleaned.get("owner_email"):
            cleaned["owner_email"] = cleaned["owner_email"].strip().lower()
        return cleaned


@admin.register(ChatChannel)
class ChatChannelAdmin(admin.ModelAdmin):
    form = ChatChannelForm
    list_display = (
        "name",
        "service",
        "url_masked",
        "owner_email",
        "immediate",
        "digest",
        "enabled",
    )
    list_filter = ("service", "enabled")
    search_fields = ("name", "owner_email")
    readonly_fields = ("service", "url_masked", "created_at")
    actions = ["send_test"]

    def delete_model(self, request: HttpRequest, obj: ChatChannel) -> None:
        channels.chat_channel_delete(name=obj.name)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ChatChannel]) -> None:
        for name in queryset.values_list("name", flat=True):
            channels.chat_channel_delete(name=name)

    @admin.action(description="Send a test message")
    def send_test(self, request: HttpRequest, queryset: QuerySet[ChatChannel]) -> None:
        for channel in queryset:
            try:
                channels.chat_channel_test(channel=channel)
            except ChatError as exc:
                self.message_user(
                    request, f"{channel.name}: test message NOT sent: {exc}", messages.ERROR
                )
            else:
                self.message_user(request, f"{channel.name}: test message sent, accepted.")
