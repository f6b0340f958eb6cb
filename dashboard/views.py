"""Dashboard pages (server-rendered) and the health check. Views parse input, check the
role, call a selector or a service, and render; no logic of their own."""

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypedDict, TypeVar

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Page, Paginator
from django.db import connection
from django.db.models import Model, QuerySet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseNotAllowed,
    JsonResponse,
    QueryDict,
    StreamingHttpResponse,
)
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.safestring import SafeString
from django.views import defaults

from accounts.roles import ADMIN, TRIAGER, VIEWER, AuthenticatedRequest, has_role, role_required
from accounts.selectors import last_visit_start
from agents import selectors as agents_selectors
from alerts import selectors as alerts_selectors
from alerts.filters import SORTS, EventFilters, event_filters_parse
from alerts.models import AlertEvent, EventKind, EventState, HighRiskPort, Rule
from alerts.rule_files import (
    MAX_BYTES,
    PlanItem,
    RuleFileError,
    rules_document_dump,
    rules_document_parse,
)
from alerts.rules import RuleError
from alerts.selectors import (
    RulePreview,
    rule_entries_load,
    rule_spec_of,
    rules_import_preview,
)
from alerts.services.events import TRANSITIONS, event_note_add, events_transition
from alerts.services.rules import (
    rule_create,
    rule_expire,
    rule_open_events_resolve,
    rule_update,
    rules_import,
)
from alerts.services.triage import TRIAGE_ACTIONS, TriageError, events_triage
from alerts.severity import Severity
from audit.models import AuditEntry
from audit.selectors import audit_entries, audit_page_rows
from dashboard import charts, slots
from dashboard.forms import (
    TRIAGE_STATES,
    BulkTriageForm,
    NoteForm,
    RuleForm,
    RulesImportForm,
    TriageForm,
    rule_initial_from_event,
)
from poc.services.queue import RecheckRefused, poc_recheck
from portmon.paging import RowsOf
from scanner import selectors as scanner_selectors
from scanner.models import Host, Network, PortState, ScanPolicy, ScanRun
from scanner.services.runs import policy_run_now
from scanner.targets import TargetError

PAGE_SIZE = 50
M = TypeVar("M", bound=Model)


class EventsChart(TypedDict):
    svg: SafeString
    legend: SafeString
    total: int


class RunsChart(TypedDict):
    svg: SafeString
    legend: SafeString
    degraded: int  # runs whose scan is not trusted


def _page(request: HttpRequest, qs: QuerySet[M], size: int = PAGE_SIZE) -> Page[M]:
    return Paginator(qs, size).get_page(request.GET.get("page"))


def _post_only(request: HttpRequest) -> HttpResponseNotAllowed | None:
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    return None


def _events_chart(per_day: list[tuple[date, dict[str, int]]]) -> EventsChart:
    """New events per day, stacked by severity (worst at the bottom)."""
    names = [label for _, label in reversed(Severity.choices)]
    series = [(name, [counts.get(name, 0) for _, counts in per_day]) for name in names]
    labels = [day.strftime("%d %b") for day, _ in per_day]
    return {
        "svg": charts.stacked_bars("New events per day", labels, series),
        "legend": charts.legend([(n, charts.severity_class(n)) for n in names]),
        "total": sum(sum(v) for _, v in series),
    }


def _runs_chart(finished: list[tuple[datetime, int, bool, str]]) -> RunsChart:
    """Open ports found by each finished run, one line per policy (runs of different
    policies cover different targets: one line would mix them)."""
    names = list(dict.fromkeys(series for *_, series in finished))
    labels = [timezone.localtime(at).strftime("%d %b") for at, *_ in finished]
    series = [
        (name, [found if s == name else None for _, found, _, s in finished]) for name in names
    ]
    return {
        "svg": charts.lines("Open ports found per run", labels, series),
        "legend": charts.legend([(n, charts.line_class(i)) for i, n in enumerate(names)]),
        "degraded": sum(1 for _, _, degraded, _ in finished if degraded),
    }


@role_required(VIEWER)
def home(request: AuthenticatedRequest) -> HttpResponse:
    scans = scanner_selectors.scan_overview()
    events = alerts_selectors.events_overview()
    context = {
        **events,
        **{key: value for key, value in scans.items() if key != "finished_runs"},
        "events_chart": _events_chart(events["events_per_day"]),
        "runs_chart": _runs_chart(scans["finished_runs"]),
    }
    return render(request, "dashboard/home.html", context)


@role_required(VIEWER)
def since(request: AuthenticatedRequest) -> HttpResponse:
    start = last_visit_start(user=request.user)
    context = alerts_selectors.since_last_visit(user=request.user, since=start)
    return render(request, "dashboard/since.html", context)


# --- Events -----------------------------------------------------------------------------


def _list_filters(params: QueryDict) -> EventFilters:
    """The events list is the work surface: open events, worst and longest waiting first."""
    return event_filters_parse(params, default_states=("open",), default_sort="severity")


# Filters folded under "More filters" unless one of them is set.
MORE_FILTERS = ("network", "host", "port", "since", "until", "rule", "suppressed")


@role_required(VIEWER)
def events_list(request: AuthenticatedRequest) -> HttpResponse:
    filters = _list_filters(request.GET)
    page = alerts_selectors.events_page(filters, number=request.GET.get("page"), size=PAGE_SIZE)
    query = request.GET.copy()
    query.pop("page", None)
    # A row's kind links to the same list narrowed to that kind: one click.
    kind_query = query.copy()
    kind_query.pop("kind", None)
    return render(
        request,
        "dashboard/events.html",
        {
            "page": page,
            "filters": filters,
            # What was typed, shown back as typed: a bad filter keeps its input.
            "raw": request.GET,
            "more_filters": bool(filters.errors)
            or any(request.GET.get(name) for name in MORE_FILTERS),
            "query": query.urlencode(),
            "kind_query": kind_query.urlencode(),
            "states": EventState.choices,
            "kinds": EventKind.choices,
            "sorts": SORTS.items(),
            "severities": list(reversed(Severity.choices)),
            "networks": Network.objects.order_by("cidr"),
            "rules": Rule.objects.order_by("id").only("pk", "action", "reason"),
            "actions": [(k, label) for k, (_, label) in TRIAGE_ACTIONS.items()],
            "can_triage": has_role(request.user, TRIAGER),
            "now": timezone.now(),
        },
    )


@role_required(TRIAGER)
def events_bulk(request: AuthenticatedRequest) -> HttpResponse:
    if response := _post_only(request):
        return response
    form = BulkTriageForm(request.POST)
    back = reverse("dashboard:events") + (
        "?" + request.POST["query"] if request.POST.get("query") else ""
    )
    if not form.is_valid():
        for field, errors in form.errors.items():
            messages.error(request, f"{field}: {' '.join(str(e) for e in errors)}")
        return redirect(back)
    try:
        result = events_triage(
            event_ids=form.cleaned_data["ids"],
            action=form.cleaned_data["action"],
            actor=request.user,
            reason=form.cleaned_data["reason"],
            until=form.until_at(),
            seen=form.seen(),
        )
    except TriageError as exc:
        messages.error(request, str(exc))
        return redirect(back)
    if result.changed:
        state = TRIAGE_ACTIONS[form.cleaned_data["action"]][0]
        messages.success(request, f"{len(result.changed)} event(s) now {state}")
    for why in list(result.refused.values())[:10]:
        messages.error(request, why)
    if len(result.refused) > 10:
        messages.error(request, f"... and {len(result.refused) - 10} more left as they were")
    return redirect(back)


@role_required(VIEWER)
def event_detail(request: AuthenticatedRequest, event_id: int) -> HttpResponse:
    try:
        event = alerts_selectors.event_detail(event_id)
    except AlertEvent.DoesNotExist:
        raise Http404("no such event") from None
    allowed = TRANSITIONS.get(event.state, frozenset())
    return render(
        request,
        "dashboard/event.html",
        {
            "event": event,
            "next_states": [(s, label) for s, label in TRIAGE_STATES if s in allowed],
            "note_form": NoteForm(),
            "can_triage": has_role(request.user, TRIAGER),
            "can_admin": has_role(request.user, ADMIN),
        },
    )


@role_required(TRIAGER)
def event_transition(request: AuthenticatedRequest, event_id: int) -> HttpResponse:
    if response := _post_only(request):
        return response
    form = TriageForm(request.POST)
    if not form.is_valid():
        messages.error(request, "choose a state")
    else:
        changed, refused = events_transition(
            event_ids=[event_id],
            to_state=form.cleaned_data["to_state"],
            actor=request.user,
            note=form.cleaned_data["note"],
        )
        for why in refused.values():
            messages.error(request, why)
        if changed:
            messages.success(request, f"event {event_id} is now {form.cleaned_data['to_state']}")
    return redirect("dashboard:event", event_id=event_id)


@role_required(TRIAGER)
def event_recheck(request: AuthenticatedRequest, event_id: int) -> HttpResponse:
    """Re-run a PoC finding's check now (the verdict fixes or reopens the finding)."""
    if response := _post_only(request):
        return response
    if not AlertEvent.objects.filter(pk=event_id).exists():
        raise Http404("no such event")
    try:
        check_id = poc_recheck(event_id=event_id, author=request.user)
    except RecheckRefused as exc:
        messages.error(request, str(exc))
        return redirect("dashboard:event", event_id=event_id)
    if check_id is None:
        messages.info(request, "a run of this check on this port is queued or running already")
    else:
        messages.success(request, f"re-check queued (PoC run {check_id}): reload for the verdict")
    return redirect("dashboard:event", event_id=event_id)


@role_required(TRIAGER)
def event_note_view(request: AuthenticatedRequest, event_id: int) -> HttpResponse:
    if response := _post_only(request):
        return response
    if not AlertEvent.objects.filter(pk=event_id).exists():
        raise Http404("no such event")
    form = NoteForm(request.POST)
    if form.is_valid() and form.cleaned_data["text"].strip():
        event_note_add(event_id=event_id, author=request.user, text=form.cleaned_data["text"])
        messages.success(request, "note added")
    else:
        messages.error(request, "a note needs text (at most 5,000 characters)")
    return redirect("dashboard:event", event_id=event_id)


class _Echo:
    """A file-like object whose write returns the line: csv.writer into a generator."""

    def write(self, value: str) -> str:
        return value


# A cell starting with one of these is a formula to a spreadsheet: a banner such as
# "=HYPERLINK(...)" from a scanned service must reach the analyst as text.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: object) -> object:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _csv_response(
    name: str, header: list[str], rows: Iterable[Iterable[object]]
) -> StreamingHttpResponse:
    writer = csv.writer(_Echo())

    def lines() -> Iterator[str]:
        yield writer.writerow(header)
        for row in rows:
            yield writer.writerow([_csv_cell(value) for value in row])

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@role_required(VIEWER)
def events_csv(request: AuthenticatedRequest) -> StreamingHttpResponse:
    filters = _list_filters(request.GET)
    labels = dict(Severity.choices)
    rows = (
        (
            pk,
            at.isoformat(),
            ip,
            proto,
            port,
            kind,
            labels.get(sev, sev),
            state,
            int(sup),
            rule or "",
            run or "",
            int(imm),
        )
        for pk, at, ip, proto, port, kind, sev, state, sup, rule, run, imm in (
            alerts_selectors.events_csv_rows(filters)
        )
    )
    header = [
        "id",
        "created_at",
        "ip",
        "proto",
        "port",
        "kind",
        "severity",
        "state",
        "suppressed",
        "rule",
        "run",
        "immediate",
    ]
    return _csv_response("events.csv", header, rows)


# --- Hosts and ports --------------------------------------------------------------------


@role_required(VIEWER)
def hosts_list(request: AuthenticatedRequest) -> HttpResponse:
    q = request.GET.get("q", "").strip()[:64]
    page = scanner_selectors.hosts_page(q=q, number=request.GET.get("page"), size=PAGE_SIZE)
    return render(request, "dashboard/hosts.html", {"page": page, "q": q})


@role_required(VIEWER)
def host_detail(request: AuthenticatedRequest, ip: str) -> HttpResponse:
    try:
        detail = scanner_selectors.host_detail(ip)
    except (Host.DoesNotExist, ValueError):
        raise Http404("no such host") from None
    host = detail["host"]
    host_slots = slots.host_slots(host)
    context = {
        "host": host,
        "ports": detail["ports"],
        "events": alerts_selectors.host_events(host_id=host.pk),
        "slots": host_slots,
        "port_rows": slots.port_rows(detail["ports"], host_slots, detail["history"]),
    }
    return render(request, "dashboard/host.html", context)


@role_required(VIEWER)
def ports_csv(request: AuthenticatedRequest) -> HttpResponseBase:
    """Open ports (default), closed ones (?state=closed) or every port (?state=all)."""
    state = request.GET.get("state", PortState.OPEN)
    if state not in (PortState.OPEN, PortState.CLOSED, "all"):
        message = "state must be open, closed or all"
        return HttpResponseBadRequest(message, content_type="text/plain")
    rows = scanner_selectors.ports_csv_rows(state=None if state == "all" else state)
    return _csv_response("ports.csv", ["ip", *scanner_selectors.PORT_CSV_FIELDS], rows)


# --- Runs, policies, networks -----------------------------------------------------------


@role_required(VIEWER)
def runs_list(request: AuthenticatedRequest) -> HttpResponse:
    page = _page(request, scanner_selectors.runs_list())
    active = any(run.state in scanner_selectors.ACTIVE_RUN_STATES for run in page.object_list)
    return render(request, "dashboard/runs.html", {"page": page, "active": active})


@role_required(VIEWER)
def run_detail(request: AuthenticatedRequest, run_id: int) -> HttpResponse:
    try:
        context = scanner_selectors.run_tree(run_id)
    except ScanRun.DoesNotExist:
        raise Http404("no such run") from None
    context["events"] = alerts_selectors.run_events_count(run_id=run_id)
    context["event_rows"] = alerts_selectors.run_events(run_id=run_id)
    context["found"] = scanner_selectors.run_ports(run_id=run_id)
    return render(request, "dashboard/run.html", context)


@role_required(VIEWER)
def policies_list(request: AuthenticatedRequest) -> HttpResponse:
    return render(
        request,
        "dashboard/policies.html",
        {"policies": scanner_selectors.policies_list(), "can_admin": has_role(request.user, ADMIN)},
    )


@role_required(ADMIN)
def policy_run(request: AuthenticatedRequest, policy_id: int) -> HttpResponse:
    if response := _post_only(request):
        return response
    try:
        run = policy_run_now(policy_id=policy_id)
    except ScanPolicy.DoesNotExist:
        raise Http404("no such policy") from None
    except TargetError as exc:  # RunError included: busy, out of scope, bad ports
        messages.error(request, str(exc))
        return redirect("dashboard:policies")
    messages.success(request, f"run {run.pk} started")
    return redirect("dashboard:run", run_id=run.pk)


@role_required(VIEWER)
def networks_list(request: AuthenticatedRequest) -> HttpResponse:
    return render(
        request, "dashboard/networks.html", {"networks": scanner_selectors.networks_list()}
    )


@role_required(VIEWER)
def agents_page(request: AuthenticatedRequest) -> HttpResponse:
    """Host agents and the cross-check of their reports with the scans."""
    context = {"agents": agents_selectors.agents_list(), "checks": agents_selectors.cross_check()}
    return render(request, "dashboard/agents.html", context)


# --- Rules ------------------------------------------------------------------------------


@role_required(VIEWER)
def rules_list(request: AuthenticatedRequest) -> HttpResponse:
    return render(
        request,
        "dashboard/rules.html",
        {
            "rules": alerts_selectors.rules_list(),
            "high_risk": HighRiskPort.objects.all(),
            "can_admin": has_role(request.user, ADMIN),
            "now": timezone.now(),
        },
    )


# What a dry run needs from the form; reason and owner are not (they block only a save).
SPEC_FIELDS = ("action", "ip_cidr", "process", "port_lo", "port_hi", "proto", "zone")


def _rule_preview(fields: dict[str, Any], rule: Rule | None) -> RulePreview:
    draft = Rule(pk=rule.pk if rule else None, **fields)
    return alerts_selectors.rule_preview(spec=rule_spec_of(draft))


def _rule_form_page(request: AuthenticatedRequest, rule: Rule | None) -> HttpResponse:
    initial, event = {}, None
    if rule is None and request.GET.get("from_event", "").isdigit():
        event = (
            AlertEvent.objects.select_related("host", "host__network")
            .filter(pk=int(request.GET["from_event"]))
            .first()
        )
        if event is not None:
            initial = rule_initial_from_event(event, request.user)
    form = RuleForm(request.POST or None, instance=rule, initial=initial)
    preview = None
    if request.method == "GET" and event is not None:
        # From an event: the dry run of the prefilled rule, before anything is typed.
        fields = {name: initial.get(name, form.fields[name].initial) for name in SPEC_FIELDS}
        preview = _rule_preview({k: v for k, v in fields.items() if v is not None}, rule)
    if request.method == "POST":
        valid = form.is_valid()
        if "preview" in request.POST:
            if not any(name in form.errors for name in SPEC_FIELDS):
                # Reason and owner are for the save: their absence does not block a dry run.
                for name in ("reason", "owner"):
                    form.errors.pop(name, None)
                fields = {name: form.cleaned_data.get(name) for name in SPEC_FIELDS}
                try:
                    preview = _rule_preview(fields, rule)
                except (RuleError, ValueError) as exc:
                    form.add_error(None, str(exc))
        elif valid:
            fields = {name: form.cleaned_data[name] for name in form.Meta.fields}
            try:
                saved = (
                    rule_update(rule_id=rule.pk, fields=fields)
                    if rule
                    else rule_create(fields=fields)
                )
            except ValidationError as exc:
                form.add_error(None, exc)
            else:
                note = ""
                if form.cleaned_data["resolve_open"]:
                    resolved = rule_open_events_resolve(rule_id=saved.pk, actor=request.user)
                    note = f"; {len(resolved)} open event(s) it matches resolved"
                messages.success(request, f"rule #{saved.pk} saved{note}")
                if event is not None:
                    return redirect("dashboard:event", event_id=event.pk)
                return redirect("dashboard:rules")
    return render(
        request,
        "dashboard/rule_form.html",
        {"form": form, "rule": rule, "preview": preview, "event": event, "now": timezone.now()},
    )


@role_required(ADMIN)
def rule_new(request: AuthenticatedRequest) -> HttpResponse:
    return _rule_form_page(request, None)


@role_required(ADMIN)
def rule_edit(request: AuthenticatedRequest, rule_id: int) -> HttpResponse:
    rule = Rule.objects.filter(pk=rule_id).first()
    if rule is None:
        raise Http404("no such rule")
    return _rule_form_page(request, rule)


@role_required(ADMIN)
def rule_expire_view(request: AuthenticatedRequest, rule_id: int) -> HttpResponse:
    if response := _post_only(request):
        return response
    try:
        rule_expire(rule_id=rule_id)
    except Rule.DoesNotExist:
        raise Http404("no such rule") from None
    messages.success(request, f"rule #{rule_id} expired")
    return redirect("dashboard:rules")


@role_required(ADMIN)
def rules_export_view(request: AuthenticatedRequest) -> HttpResponse:
    now = timezone.now()
    text = rules_document_dump([e for _, e in rule_entries_load()], exported_at=now)
    response = HttpResponse(text, content_type="application/json; charset=utf-8")
    name = f"portmon-rules-{now:%Y%m%d-%H%M}.json"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@role_required(ADMIN)
def rules_import_view(request: AuthenticatedRequest) -> HttpResponse:
    """Upload -> dry run (what each rule would do, events of the last 7 days) -> import."""
    form = RulesImportForm(request.POST or None, request.FILES or None)
    preview: list[tuple[PlanItem, int]] | None = None
    error: str | None = None
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        raw = upload.read(MAX_BYTES + 1) if upload else form.cleaned_data["document"]
        try:
            if not raw:
                raise RuleFileError("choose a rules file (written by Export)")
            entries = rules_document_parse(raw)
        except RuleFileError as exc:
            error = str(exc)
        else:
            if "apply" in request.POST and not upload:
                done = rules_import(entries=entries)
                changes = [item.change for item in done]
                messages.success(
                    request,
                    f"rules imported: {changes.count('create')} created, "
                    f"{changes.count('update')} updated, {changes.count('unchanged')} unchanged",
                )
                return redirect("dashboard:rules")
            preview = rules_import_preview(entries)
            # Decoded by rules_document_parse already: this cannot fail.
            text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
            form = RulesImportForm(initial={"document": text})
    context = {"form": form, "preview": preview, "error": error}
    return render(request, "dashboard/rules_import.html", context)


# --- Audit ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditRow:
    """An audit entry (with its field changes, audit.selectors) and where its object is
    shown ("" when nowhere this user may go)."""

    entry: AuditEntry
    link: str


# Where an audited object is shown: a dashboard page, else its admin page (staff only).
AUDIT_PAGES = {
    "alerts.rule": "dashboard:rule_edit",
    "alerts.alertevent": "dashboard:event",
    "scanner.scanrun": "dashboard:run",
}


def _audit_link(entry: AuditEntry, staff: bool) -> str:
    if not entry.object_id.isdigit():
        return ""
    if entry.object_type in AUDIT_PAGES:
        return reverse(AUDIT_PAGES[entry.object_type], args=[int(entry.object_id)])
    app, _, model = entry.object_type.partition(".")
    if staff and app and model:
        try:
            return reverse(f"admin:{app}_{model}_change", args=[entry.object_id])
        except NoReverseMatch:
            return ""
    return ""


@role_required(ADMIN)
def audit_log(request: AuthenticatedRequest) -> HttpResponse:
    staff = request.user.is_staff

    def rows(entries: list[AuditEntry]) -> list[AuditRow]:
        return [AuditRow(entry, _audit_link(entry, staff)) for entry in audit_page_rows(entries)]

    page = Paginator(RowsOf(audit_entries(), rows), PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "dashboard/audit.html", {"page": page})


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers: no login, no data, just 'the database answers'."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """JSON under /api/ (what the API's clients and its schema expect), else Django's page."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """A request Django refused before any view (a malformed multipart body, too many
    fields): JSON under /api/, else Django's page."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Bad request."}, status=400)
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return render(request, "dashboard/403.html", {"reason": str(exception or "")}, status=403)
