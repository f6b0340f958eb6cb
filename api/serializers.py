"""API representations; validation of writes is the services' (rules) or the forms'."""

from rest_framework import serializers

from alerts.models import RULE_KEPT_FIELDS, AlertEvent, EventAudit, EventNote, EventState, Rule
from alerts.rule_files import RULE_FIELDS
from alerts.severity import Severity
from scanner.models import Host, Network, Port, ScanPolicy, ScanRun, ScanShard


class SeverityField(serializers.ChoiceField):
    def __init__(self, **kwargs):
        super().__init__(choices=[label for _, label in Severity.choices], **kwargs)

    def to_representation(self, value):
        return Severity(value).label


class NetworkSerializer(serializers.ModelSerializer):
    class Meta:
        model = Network
        fields = [
            "id",
            "cidr",
            "zone",
            "owner_email",
            "description",
            "new_port_window_days",
            "created_at",
        ]
        read_only_fields = ["created_at"]
        extra_kwargs = {"cidr": {"min_length": 1}}


class HostSerializer(serializers.ModelSerializer):
    # NULL: a host outside every network in scope (an import, a network removed since).
    network: serializers.PrimaryKeyRelatedField = serializers.PrimaryKeyRelatedField(
        read_only=True, allow_null=True
    )

    class Meta:
        model = Host
        fields = ["id", "ip", "hostname", "network", "first_seen", "last_seen"]


class PortSerializer(serializers.ModelSerializer):
    ip = serializers.CharField(source="host.ip", read_only=True)

    class Meta:
        model = Port
        fields = [
            "id",
            "host",
            "ip",
            "proto",
            "port",
            "state",
            "service",
            "product",
            "version",
            "first_seen",
            "last_seen",
            "seen_count",
            "missed_runs",
        ]


class NoteSerializer(serializers.ModelSerializer):
    author = serializers.CharField(
        source="author.username", read_only=True, default=None, allow_null=True
    )

    class Meta:
        model = EventNote
        fields = ["id", "author", "text", "created_at"]
        read_only_fields = ["created_at"]


class AuditSerializer(serializers.ModelSerializer):
    # NULL: the system (the diff, a command line).
    actor = serializers.CharField(
        source="actor.username", read_only=True, default=None, allow_null=True
    )

    class Meta:
        model = EventAudit
        fields = ["actor", "action", "from_state", "to_state", "at", "comment"]


class EventSerializer(serializers.ModelSerializer):
    ip = serializers.CharField(source="host.ip", read_only=True)
    severity = SeverityField(read_only=True)
    url = serializers.CharField(source="get_absolute_url", read_only=True)

    class Meta:
        model = AlertEvent
        fields = [
            "id",
            "url",
            "host",
            "ip",
            "proto",
            "port",
            "kind",
            "severity",
            "state",
            "run",
            "rule",
            "suppressed",
            "immediate",
            "detail",
            "created_at",
            "updated_at",
            "resolved_at",
            "accepted_until",
        ]


class EventDetailSerializer(EventSerializer):
    notes = NoteSerializer(many=True, read_only=True)
    audit = AuditSerializer(many=True, read_only=True)

    class Meta(EventSerializer.Meta):
        fields = [*EventSerializer.Meta.fields, "notes", "audit"]


class TransitionSerializer(serializers.Serializer):
    to_state = serializers.ChoiceField(choices=EventState.choices)
    note = serializers.CharField(required=False, allow_blank=True, max_length=5000)


class BulkTransitionSerializer(TransitionSerializer):
    ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1), min_length=1, max_length=1000
    )


class BulkResultSerializer(serializers.Serializer):
    changed = serializers.ListField(child=serializers.IntegerField())
    refused = serializers.DictField(child=serializers.CharField())


class RecheckSerializer(serializers.Serializer):
    poc_run = serializers.IntegerField(allow_null=True, help_text="null: one is pending already")
    detail = serializers.CharField()


class NoteCreateSerializer(serializers.Serializer):
    text = serializers.CharField(max_length=5000)


class RuleSerializer(serializers.ModelSerializer):
    class Meta:
        model = Rule
        fields = ["id", *RULE_FIELDS, *RULE_KEPT_FIELDS]
        read_only_fields = list(RULE_KEPT_FIELDS)


class PolicySerializer(serializers.ModelSerializer):
    class Meta:
        model = ScanPolicy
        fields = [
            "id",
            "name",
            "targets",
            "ports",
            "udp_ports",
            "rate",
            "engine",
            "zone",
            "fingerprint",
            "schedule",
            "enabled",
            "created_at",
        ]
        read_only_fields = ["created_at"]


class ShardSerializer(serializers.ModelSerializer):
    class Meta:
        model = ScanShard
        fields = [
            "index",
            "proto",
            "state",
            "attempts",
            "worker",
            "probes_total",
            "probes_done",
            "ports_found",
            "started_at",
            "finished_at",
            "error",
        ]


class RunSerializer(serializers.ModelSerializer):
    class Meta:
        model = ScanRun
        fields = [
            "id",
            "policy",
            "source",
            "targets",
            "ports",
            "udp_ports",
            "engine",
            "zone",
            "state",
            "degraded",
            "hosts_found",
            "ports_found",
            "created_at",
            "started_at",
            "finished_at",
            "diffed_at",
            "error",
        ]


class RunDetailSerializer(RunSerializer):
    shards = ShardSerializer(many=True, read_only=True)

    class Meta(RunSerializer.Meta):
        fields = [*RunSerializer.Meta.fields, "shards"]


class RunStartSerializer(serializers.Serializer):
    targets = serializers.CharField(max_length=10000)
    ports = serializers.CharField(max_length=200, default="1-65535", allow_blank=True)
    # UDP ports to probe as well ("" none); see scanner.targets.UDP_DEFAULT_PORTS.
    udp_ports = serializers.CharField(max_length=200, default="", allow_blank=True)
    rate = serializers.IntegerField(default=100_000)
    engine = serializers.CharField(default="auto", max_length=16)
    fingerprint = serializers.BooleanField(default=True)
