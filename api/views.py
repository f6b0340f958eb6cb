"""REST API and /metrics: thin views over the same selectors and services as the
dashboard (the apps' own)."""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.response import Response

from accounts.roles import ADMIN, TRIAGER, VIEWER, has_role
from alerts.filters import event_filters_parse
from alerts.metrics import AlertsCollector
from alerts.models import AlertEvent, EventAudit, EventNote, Rule
from alerts.rules import RuleError
from alerts.selectors import events_by_ids, events_filtered, rule_dry_run, rule_spec_of
from alerts.services.events import event_note_add, events_transition
from alerts.services.rules import rule_create, rule_expire, rule_update
from api import serializers as s
from api.authentication import token_authenticate
from poc.services.queue import RecheckRefused, poc_recheck
from scanner.metrics import ScannerCollector
from scanner.models import Host, Network, Port, ScanPolicy, ScanRun
from scanner.scope import ScopeError
from scanner.services.runs import policy_run_now, run_start
from scanner.services.schedules import policy_save
from scanner.services.scope import network_add, network_remove
from scanner.targets import TargetError

EVENT_FILTERS = [
    OpenApiParameter("state", str, many=True, description="state, or 'open' or 'all'; repeatable"),
    OpenApiParameter("kind", str, many=True, description="event kind; repeatable"),
    OpenApiParameter("severity", str, description="this severity or worse"),
    OpenApiParameter(
        "severity_max", str, description="this severity or milder (with severity: exactly one)"
    ),
    OpenApiParameter("network", int),
    OpenApiParameter("host", str, description="IP or CIDR"),
    OpenApiParameter("port", int),
    OpenApiParameter("run", int),
    OpenApiParameter("rule", int),
    OpenApiParameter("since", OpenApiTypes.DATE),
    OpenApiParameter("until", OpenApiTypes.DATE),
    OpenApiParameter("suppressed", str, enum=["yes", "no"]),
    OpenApiParameter(
        "q", str, description="search: address, host name, port, service, product, process"
    ),
    OpenApiParameter("sort", str, enum=["newest", "oldest", "severity"]),
]


def _bad_request(exc) -> ValidationError:
    return ValidationError({"detail": str(getattr(exc, "messages", [exc])[0])})


class HostViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = s.HostSerializer
    queryset = Host.objects.order_by("ip")
    lookup_field = "ip"
    lookup_value_regex = r"[0-9A-Fa-f:.]+"


@extend_schema_view(
    list=extend_schema(
        parameters=[
            OpenApiParameter("state", str, enum=["open", "closed"]),
            OpenApiParameter("host", str),
        ]
    )
)
class PortViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = s.PortSerializer

    def get_queryset(self):
        qs = Port.objects.select_related("host").order_by("host__ip", "proto", "port")
        state = self.request.query_params.get("state", "")
        if state not in ("", "open", "closed"):
            raise ValidationError({"detail": f"state: {state[:40]!r} is not open or closed"})
        if state:
            qs = qs.filter(state=state)
        if self.request.query_params.get("host"):
            qs = qs.filter(host__ip=self.request.query_params["host"].strip())
        return qs


@extend_schema_view(list=extend_schema(parameters=EVENT_FILTERS))
class EventViewSet(viewsets.ReadOnlyModelViewSet):
    action_roles = {
        "transition": TRIAGER, "bulk_transition": TRIAGER, "notes": TRIAGER, "recheck": TRIAGER,
    }  # fmt: skip

    def get_serializer_class(self):
        return s.EventDetailSerializer if self.action == "retrieve" else s.EventSerializer

    def get_queryset(self):
        if self.action == "list":
            filters = event_filters_parse(self.request.query_params)
            if filters.errors:
                raise ValidationError({"detail": list(filters.errors)})
            return events_filtered(filters)
        return AlertEvent.objects.select_related("host").prefetch_related(
            Prefetch("notes", EventNote.objects.select_related("author")),
            Prefetch("audit", EventAudit.objects.select_related("actor")),
        )

    def list(self, request, *args, **kwargs):
        # The page's ids from the events table alone, then its rows by id, as the
        # dashboard's list does (alerts.selectors.events_page): paging the joined query
        # had MariaDB sort the whole join (100,000 events: 370 ms a page, 22 ms now;
        # bench/dashboard_bench.py).
        ids = self.get_queryset().select_related(None).values_list("pk", flat=True)
        events = events_by_ids(list(self.paginate_queryset(ids) or ()), ("host",))
        return self.get_paginated_response(self.get_serializer(events, many=True).data)

    @extend_schema(request=s.TransitionSerializer, responses=s.EventDetailSerializer)
    @action(detail=True, methods=["post"])
    def transition(self, request, pk=None):
        event = self.get_object()
        body = s.TransitionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        _, refused = events_transition(
            event_ids=[event.pk], actor=request.user, **body.validated_data
        )
        if refused:
            return Response({"detail": refused[event.pk]}, status=status.HTTP_409_CONFLICT)
        return Response(s.EventDetailSerializer(self.get_queryset().get(pk=event.pk)).data)

    @extend_schema(
        request=s.BulkTransitionSerializer,
        responses=s.BulkResultSerializer,
        operation_id="events_bulk_transition",
    )
    @action(detail=False, methods=["post"], url_path="transition")
    def bulk_transition(self, request):
        body = s.BulkTransitionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        changed, refused = events_transition(
            event_ids=data["ids"],
            to_state=data["to_state"],
            actor=request.user,
            note=data.get("note", ""),
        )
        return Response({"changed": changed, "refused": {str(k): v for k, v in refused.items()}})

    @extend_schema(request=None, responses={202: s.RecheckSerializer, 200: s.RecheckSerializer})
    @action(detail=True, methods=["post"])
    def recheck(self, request, pk=None):
        """Re-run a PoC finding's check now: its verdict fixes, keeps or reopens it."""
        event = self.get_object()
        try:
            check_id = poc_recheck(event_id=event.pk, author=request.user)
        except RecheckRefused as exc:
            raise _bad_request(exc) from None
        if check_id is None:
            return Response(
                {"poc_run": None, "detail": "a run of this check is queued or running already"}
            )
        body = {"poc_run": check_id, "detail": "queued"}
        return Response(body, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=s.NoteCreateSerializer, responses={201: s.NoteSerializer})
    @action(detail=True, methods=["post"])
    def notes(self, request, pk=None):
        event = self.get_object()
        body = s.NoteCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            note = event_note_add(
                event_id=event.pk, author=request.user, text=body.validated_data["text"]
            )
        except ValueError as exc:
            raise _bad_request(exc) from None
        return Response(s.NoteSerializer(note).data, status=status.HTTP_201_CREATED)


class RuleViewSet(mixins.CreateModelMixin, mixins.UpdateModelMixin, viewsets.ReadOnlyModelViewSet):
    serializer_class = s.RuleSerializer
    queryset = Rule.objects.order_by("id")
    write_role = ADMIN
    action_roles = {"dry_run": ADMIN, "preview": ADMIN, "expire": ADMIN}

    def perform_create(self, serializer):
        try:
            serializer.instance = rule_create(fields=serializer.validated_data)
        except DjangoValidationError as exc:
            raise _bad_request(exc) from None

    def perform_update(self, serializer):
        try:
            serializer.instance = rule_update(
                rule_id=serializer.instance.pk, fields=serializer.validated_data
            )
        except DjangoValidationError as exc:
            raise _bad_request(exc) from None

    @extend_schema(request=None, responses=s.RuleSerializer)
    @action(detail=True, methods=["post"])
    def expire(self, request, pk=None):
        return Response(s.RuleSerializer(rule_expire(rule_id=self.get_object().pk)).data)

    # A plain list (the last 7 days' matches), not a page: pagination_class=None says so
    # in the schema too.
    @extend_schema(request=None, responses=s.EventSerializer(many=True))
    @action(detail=True, methods=["post"], url_path="dry-run", pagination_class=None)
    def dry_run(self, request, pk=None):
        """Events of the last 7 days this saved rule matches."""
        return Response(
            s.EventSerializer(rule_dry_run(spec=rule_spec_of(self.get_object())), many=True).data
        )

    @extend_schema(
        request=s.RuleSerializer,
        responses=s.EventSerializer(many=True),
        operation_id="rules_draft_dry_run",
    )
    @action(detail=False, methods=["post"], url_path="dry-run", pagination_class=None)
    def preview(self, request):
        """Events of the last 7 days a draft rule would match (nothing is saved)."""
        body = s.RuleSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            matched = rule_dry_run(spec=rule_spec_of(Rule(**body.validated_data)))
        except (RuleError, ValueError) as exc:
            raise _bad_request(exc) from None
        return Response(s.EventSerializer(matched, many=True).data)


class NetworkViewSet(
    mixins.CreateModelMixin, mixins.DestroyModelMixin, viewsets.ReadOnlyModelViewSet
):
    serializer_class = s.NetworkSerializer
    queryset = Network.objects.order_by("cidr")
    write_role = ADMIN

    def perform_create(self, serializer):
        d = serializer.validated_data
        try:
            serializer.instance = network_add(
                cidr=d["cidr"],
                zone=d.get("zone", "internal"),
                owner_email=d.get("owner_email", ""),
                description=d.get("description", ""),
            )
        except (ScopeError, TargetError, ValueError) as exc:
            raise _bad_request(exc) from None

    def perform_destroy(self, instance):
        network_remove(cidr=instance.cidr)


class PolicyViewSet(
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.ReadOnlyModelViewSet,
):
    serializer_class = s.PolicySerializer
    queryset = ScanPolicy.objects.order_by("name")
    write_role = ADMIN
    action_roles = {"run": ADMIN}

    def _save(self, serializer, instance=None):
        try:
            serializer.instance = policy_save(
                fields=serializer.validated_data, policy_id=instance.pk if instance else None
            )
        except DjangoValidationError as exc:
            raise ValidationError(exc.message_dict) from None

    def perform_create(self, serializer):
        self._save(serializer)

    def perform_update(self, serializer):
        self._save(serializer, serializer.instance)

    @extend_schema(request=None, responses={201: s.RunSerializer})
    @action(detail=True, methods=["post"])
    def run(self, request, pk=None):
        """Start this policy's run now."""
        try:
            run = policy_run_now(policy_id=self.get_object().pk)
        except TargetError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(s.RunSerializer(run).data, status=status.HTTP_201_CREATED)


class RunViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    write_role = ADMIN

    def get_queryset(self):
        qs = ScanRun.objects.order_by("-created_at", "-id")
        return qs.prefetch_related("shards") if self.action == "retrieve" else qs

    def get_serializer_class(self):
        if self.action == "create":
            return s.RunStartSerializer
        return s.RunDetailSerializer if self.action == "retrieve" else s.RunSerializer

    @extend_schema(request=s.RunStartSerializer, responses={201: s.RunSerializer})
    def create(self, request):
        """Start an ad hoc run (the same checks as `manage.py scan`: scope, ports, rate)."""
        body = s.RunStartSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            run = run_start(**body.validated_data)
        except TargetError as exc:
            raise _bad_request(exc) from None
        return Response(s.RunSerializer(run).data, status=status.HTTP_201_CREATED)


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus scrape: a logged-in viewer, or an API token (Authorization: Bearer|Token).

    The apps' collectors on a private registry (not the global one): each scrape reads the
    database, so every web process answers the same."""
    user = request.user if request.user.is_authenticated else None
    if user is None:
        try:
            user = (token_authenticate(request, keywords=("bearer", "token")) or (None,))[0]
        except APIException as exc:  # a bad token (401) or an address locked out (429)
            return HttpResponse(
                f"{exc.detail}\n", status=exc.status_code, content_type="text/plain"
            )
    if user is None:
        response = HttpResponse("authentication required\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="portmon"'
        return response
    if not has_role(user, VIEWER):
        return HttpResponse("the viewer role is needed\n", status=403, content_type="text/plain")
    registry = CollectorRegistry(auto_describe=False)
    for collector in (ScannerCollector(), AlertsCollector()):
        registry.register(collector)
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
