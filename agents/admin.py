from django.contrib import admin, messages

from agents.models import Agent, AgentHost, AgentReport, ProcessSocket, SocketChange
from agents.services.enrollment import agent_revoke, agent_rotate


class AgentHostInline(admin.TabularInline):
    model = AgentHost
    extra = 0
    raw_id_fields = ["host"]


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ["name", "addresses_list", "enabled", "last_report_at", "created_at"]
    list_filter = ["enabled"]
    search_fields = ["name", "addresses__host__ip"]
    # Tokens are issued by `manage.py agent add` and the actions below, shown once.
    readonly_fields = ["key_id", "token_hash", "last_seq", "revoked_at", "rotated_at"]
    inlines = [AgentHostInline]
    actions = ["rotate_tokens", "revoke_tokens"]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("addresses__host")

    @admin.display(description="addresses")
    def addresses_list(self, agent: Agent) -> str:
        return ", ".join(link.host.ip for link in agent.addresses.all())

    def has_add_permission(self, request) -> bool:
        return False  # `manage.py agent add NAME --host IP` issues the token with the row

    @admin.action(description="Issue a new token (shown once; the old one stops working)")
    def rotate_tokens(self, request, queryset):
        for agent in queryset:
            issued = agent_rotate(agent_id=agent.pk)
            self.message_user(
                request,
                f"New token for {issued.name} (copy it now, it is not stored): {issued.token}",
                messages.WARNING,
            )

    @admin.action(description="Revoke tokens")
    def revoke_tokens(self, request, queryset):
        revoked = sum(agent_revoke(agent_id=agent.pk) for agent in queryset)
        self.message_user(request, f"{revoked} agent(s) revoked.")


@admin.register(ProcessSocket)
class ProcessSocketAdmin(admin.ModelAdmin):
    list_display = ["host", "proto", "port", "name", "exe", "pid", "first_seen", "last_seen"]
    list_filter = ["proto"]
    search_fields = ["host__ip", "name", "exe"]
    list_select_related = ["host"]


@admin.register(SocketChange)
class SocketChangeAdmin(admin.ModelAdmin):
    list_display = ["at", "host", "proto", "port", "kind", "name", "old_name"]
    list_filter = ["kind"]
    list_select_related = ["host"]


@admin.register(AgentReport)
class AgentReportAdmin(admin.ModelAdmin):
    list_display = ["agent", "report_id", "seq", "collected_at", "received_at", "sockets"]
    list_select_related = ["agent"]
