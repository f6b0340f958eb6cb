from django.contrib import admin
from django.core.exceptions import ValidationError
from django.forms.models import BaseInlineFormSet

from scanner.models import (
    Exclusion,
    Host,
    Network,
    Port,
    PortObservation,
    ScanPolicy,
    ScanRun,
    ScanShard,
)
from scanner.scope import find_overlap, parse_network


class ExclusionFormSet(BaseInlineFormSet):
    """Each exclusion is checked by Exclusion.clean; these also against each other."""

    def clean(self) -> None:
        super().clean()
        seen: list[str] = []
        for form in self.forms:
            cidr = getattr(form, "cleaned_data", {}).get("cidr")
            if not cidr or form.cleaned_data.get("DELETE"):
                continue
            clash = find_overlap(parse_network(cidr), seen)
            if clash:
                raise ValidationError(f"exclusions {clash} and {cidr} overlap")
            seen.append(cidr)


class ExclusionInline(admin.TabularInline):
    model = Exclusion
    formset = ExclusionFormSet
    extra = 0


@admin.register(Network)
class NetworkAdmin(admin.ModelAdmin):
    list_display = ["cidr", "zone", "owner_email", "description", "new_port_window_days"]
    list_filter = ["zone"]
    search_fields = ["cidr", "owner_email", "description"]
    inlines = [ExclusionInline]


@admin.register(Exclusion)
class ExclusionAdmin(admin.ModelAdmin):
    list_display = ["cidr", "network", "reason", "created_at"]
    search_fields = ["cidr", "reason"]
    list_select_related = ["network"]


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    list_display = ["ip", "hostname", "network", "first_seen", "last_seen"]
    list_filter = ["network__zone"]
    search_fields = ["ip", "hostname"]
    list_select_related = ["network"]


@admin.register(ScanPolicy)
class ScanPolicyAdmin(admin.ModelAdmin):
    list_display = ["name", "zone", "engine", "ports", "udp_ports", "rate", "schedule", "enabled"]
    list_filter = ["zone", "engine", "enabled"]
    search_fields = ["name", "targets"]


class ScanShardInline(admin.TabularInline):
    model = ScanShard
    extra = 0
    fields = readonly_fields = (
        "index",
        "proto",
        "targets",
        "ports",
        "state",
        "attempts",
        "worker",
        "ports_found",
        "error",
    )
    can_delete = False


@admin.register(ScanRun)
class ScanRunAdmin(admin.ModelAdmin):
    list_display = [
        "id", "policy", "source", "zone", "engine", "state", "degraded",
        "hosts_found", "ports_found", "created_at", "finished_at",
    ]  # fmt: skip
    list_filter = ["state", "source", "zone", "engine", "degraded"]
    search_fields = ["targets", "policy__name"]
    list_select_related = ["policy"]
    date_hierarchy = "created_at"
    inlines = [ScanShardInline]


@admin.register(ScanShard)
class ScanShardAdmin(admin.ModelAdmin):
    list_display = ["run", "index", "state", "attempts", "worker", "ports_found", "started_at"]
    list_filter = ["state"]
    search_fields = ["targets", "worker"]


@admin.register(PortObservation)
class PortObservationAdmin(admin.ModelAdmin):
    list_display = ["host", "port", "proto", "run", "service", "product", "version", "seen_at"]
    list_filter = ["proto", "fingerprinted"]
    search_fields = ["host__ip", "service", "product"]
    list_select_related = ["host"]
    raw_id_fields = ["run", "host"]


@admin.register(Port)
class PortAdmin(admin.ModelAdmin):
    list_display = [
        "host", "port", "proto", "state", "service", "product", "version",
        "first_seen", "last_seen", "seen_count",
    ]  # fmt: skip
    list_filter = ["state", "proto", "service"]
    search_fields = ["host__ip", "service", "product", "=port"]
    list_select_related = ["host"]
    raw_id_fields = ["host"]
