from django.contrib import admin, messages

from alerts.models import (
    RULE_KEPT_FIELDS,
    AlertEvent,
    EventAudit,
    EventNote,
    HighRiskPort,
    Rule,
)
from alerts.rule_files import RULE_FIELDS
from alerts.selectors import rule_dry_run, rule_spec_of
from alerts.services.events import events_transition


class EventNoteInline(admin.TabularInline):
    model = EventNote
    extra = 0
    fields = ["created_at", "author", "text"]
    readonly_fields = ["created_at"]


class EventAuditInline(admin.TabularInline):
    model = EventAudit
    extra = 0
    fields = readonly_fields = ("at", "actor", "action", "from_state", "to_state", "comment")
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(AlertEvent)
class AlertEventAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "created_at",
        "kind",
        "state",
        "host",
        "port",
        "proto",
        "immediate",
        "suppressed",
        "rule",
    ]
    list_filter = ["kind", "state", "immediate", "suppressed", "host__network__zone"]
    search_fields = ["host__ip", "host__hostname", "=port"]
    list_select_related = ["host", "rule"]
    date_hierarchy = "created_at"
    # State changes go through the triage service (audit rows), not through this form.
    readonly_fields = ["state", "open_key", "resolved_at", "run", "created_at", "updated_at"]
    raw_id_fields = ["host", "rule"]
    inlines = [EventNoteInline, EventAuditInline]
    actions = ["mark_acknowledged", "mark_ignored", "mark_fixed"]

    def _triage(self, request, queryset, to_state: str) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        changed, refused = events_transition(event_ids=ids, to_state=to_state, actor=request.user)
        self.message_user(request, f"{len(changed)} event(s) marked {to_state}", messages.INFO)
        for event_id, why in refused.items():
            self.message_user(request, f"event {event_id}: {why}", messages.WARNING)

    @admin.action(description="Mark acknowledged")
    def mark_acknowledged(self, request, queryset):
        self._triage(request, queryset, "acknowledged")

    @admin.action(description="Mark ignored")
    def mark_ignored(self, request, queryset):
        self._triage(request, queryset, "ignored")

    @admin.action(description="Mark fixed")
    def mark_fixed(self, request, queryset):
        self._triage(request, queryset, "fixed")


@admin.register(EventAudit)
class EventAuditAdmin(admin.ModelAdmin):
    list_display = ["at", "event", "actor", "action", "from_state", "to_state"]
    list_filter = ["action", "to_state"]
    search_fields = ["event__host__ip", "comment"]
    list_select_related = ["event", "actor"]


@admin.register(Rule)
class RuleAdmin(admin.ModelAdmin):
    list_display = ["id", *RULE_FIELDS, *RULE_KEPT_FIELDS]
    list_filter = ["action", "enabled", "proto", "zone"]
    search_fields = ["ip_cidr", "process", "reason", "owner"]
    fields = [*RULE_FIELDS, *RULE_KEPT_FIELDS]
    readonly_fields = list(RULE_KEPT_FIELDS)
    actions = ["dry_run"]

    @admin.action(description="Dry run: which of the last 7 days' events would it match")
    def dry_run(self, request, queryset):
        for rule in queryset:
            matched = rule_dry_run(spec=rule_spec_of(rule))
            shown = ", ".join(
                f"#{e.pk} {e.kind} {e.host.ip}:{e.port}/{e.proto}" for e in matched[:20]
            )
            more = f" and {len(matched) - 20} more" if len(matched) > 20 else ""
            self.message_user(
                request,
                f"Rule #{rule.pk} would have matched {len(matched)} event(s)"
                + (f": {shown}{more}" if matched else ""),
                messages.INFO,
            )


@admin.register(HighRiskPort)
class HighRiskPortAdmin(admin.ModelAdmin):
    list_display = ["port", "proto", "reason"]
    list_filter = ["proto"]
    search_fields = ["=port", "reason"]
