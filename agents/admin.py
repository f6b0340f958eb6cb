from django.contrib import admin

from agents.models import Agent


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ["name", "host", "enabled", "last_report_at"]
    list_filter = ["enabled"]
    search_fields = ["name", "host__ip"]
    readonly_fields = ["token_hash"]
    list_select_related = ["host"]
