"""Reads for alerts: event lists, active rules, the high-risk list."""

from datetime import datetime, timedelta

from django.db.models import QuerySet
from django.utils import timezone

from alerts.models import AlertEvent, HighRiskPort, Rule
from alerts.rule_files import RULE_FIELDS, PlanItem, RuleEntry, rules_import_plan
from alerts.rules import RuleSpec, Subject, rule_spec_validate


def rule_spec_of(rule: Rule) -> RuleSpec:
    return RuleSpec(
        id=rule.pk,
        action=rule.action,
        ip_cidr=rule.ip_cidr,
        process=rule.process,
        port_lo=rule.port_lo,
        port_hi=rule.port_hi,
        proto=rule.proto,
        zone=rule.zone,
        expires_at=rule.expires_at,
        enabled=rule.enabled,
    )


def rule_entry_of(rule: Rule) -> RuleEntry:
    """A rule as it is written to a rules file (the fields a person sets)."""
    return RuleEntry(**{name: getattr(rule, name) for name in RULE_FIELDS})


def rule_entries_load() -> list[tuple[int, RuleEntry]]:
    """Every rule (enabled, disabled or expired) as (id, entry), oldest first."""
    return [(r.pk, rule_entry_of(r)) for r in Rule.objects.order_by("id")]


def rule_specs_load() -> list[RuleSpec]:
    """Enabled rules as plain specs (expiry is checked by the matcher at the run's time)."""
    return [rule_spec_of(r) for r in Rule.objects.filter(enabled=True)]


def high_risk_ports() -> set[tuple[str, int]]:
    return set(HighRiskPort.objects.values_list("proto", "port"))


def events_list(
    *,
    states: list[str] | None = None,
    kinds: list[str] | None = None,
    since: datetime | None = None,
    include_suppressed: bool = True,
) -> QuerySet[AlertEvent]:
    """Events newest first, with host, network and rule loaded (no N+1 on lists)."""
    qs = AlertEvent.objects.select_related("host", "host__network", "rule")
    if states:
        qs = qs.filter(state__in=states)
    if kinds:
        qs = qs.filter(kind__in=kinds)
    if since is not None:
        qs = qs.filter(created_at__gte=since)
    if not include_suppressed:
        qs = qs.filter(suppressed=False)
    return qs.order_by("-created_at", "-id")


def rules_import_preview(
    entries: list[RuleEntry], *, now: datetime | None = None
) -> list[tuple[PlanItem, int]]:
    """The dry run of an import: each rule's change and how many events of the last 7 days
    it matches (its own fields only, as the rule page's dry run)."""
    plan = rules_import_plan(entries, rule_entries_load())
    counts = rule_dry_run_counts(specs=[item.entry.spec() for item in plan], now=now)
    return list(zip(plan, counts, strict=True))


# --- dry runs: what a rule would catch (reads only) ------------------------------
DRY_RUN_DAYS = 7


def rule_dry_run(
    *, spec: RuleSpec, now: datetime | None = None, days: int = DRY_RUN_DAYS
) -> list[AlertEvent]:
    """Events of the last `days` days that a rule (saved, or a draft with id None) matches.

    Matched on the rule's own fields only (not precedence against other rules, nor whether
    it is enabled or expired): the question is "what does this rule catch", not "what
    would change".
    """
    rule_spec_validate(
        ip_cidr=spec.ip_cidr, port_lo=spec.port_lo, port_hi=spec.port_hi, process=spec.process
    )
    now = now or timezone.now()
    events = AlertEvent.objects.filter(
        created_at__gte=now - timedelta(days=days), created_at__lte=now
    ).select_related("host", "host__network")
    return [e for e in events.order_by("-created_at", "-id") if spec.matches(_subject(e))]


def _subject(event: AlertEvent) -> Subject:
    detail = event.detail or {}
    net = event.host.network
    return Subject(
        ip=event.host.ip,
        proto=event.proto,
        port=event.port,
        zone=detail.get("zone") or (net.zone if net else ""),
        process=detail.get("process", ""),
    )


def rule_dry_run_counts(
    *, specs: list[RuleSpec], now: datetime | None = None, days: int = DRY_RUN_DAYS
) -> list[int]:
    """How many events of the last `days` days each spec matches (rule_dry_run's question
    for many rules at once: the events are read once, not once per rule)."""
    if not specs:
        return []
    now = now or timezone.now()
    counts = [0] * len(specs)
    events = AlertEvent.objects.filter(
        created_at__gte=now - timedelta(days=days), created_at__lte=now
    ).select_related("host", "host__network")
    for event in events.only("proto", "port", "detail", "host__ip", "host__network__zone").iterator(
        chunk_size=2000
    ):
        subject = _subject(event)
        for i, spec in enumerate(specs):
            if spec.matches(subject):
                counts[i] += 1
    return counts
