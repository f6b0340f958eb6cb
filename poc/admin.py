from django.contrib import admin

from poc.models import PocCheck, PocResult


@admin.register(PocResult)
class PocResultAdmin(admin.ModelAdmin):
    list_display = ("checked_at", "host", "port", "proto", "check_name", "vulnerable", "severity")
    list_filter = ("vulnerable", "severity", "check_name")
    list_select_related = ("host",)
    readonly_fields = [f.name for f in PocResult._meta.fields]


@admin.register(PocCheck)
class PocCheckAdmin(admin.ModelAdmin):
    list_display = (
        "created_at",
        "host",
        "port",
        "check_name",
        "reason",
        "state",
        "attempts",
        "error",
    )
    list_filter = ("state", "reason", "check_name")
    list_select_related = ("host",)
    readonly_fields = [f.name for f in PocCheck._meta.fields]
