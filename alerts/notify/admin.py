from django.contrib import admin

from alerts.notify.models import Message
from alerts.notify.services import messages_retry_now


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

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.action(description="Retry now (unsent messages only)")
    def retry_now(self, request, queryset):
        count = messages_retry_now(message_ids=queryset.values_list("pk", flat=True))
        self.message_user(request, f"{count} messages are due now.")
