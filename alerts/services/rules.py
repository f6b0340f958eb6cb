"""Rule services: create, update, expire, and the dry run (which recent events would a
draft rule have matched)."""

from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from alerts.models import AlertEvent, Rule
from alerts.rule_files import CREATE, UPDATE, PlanItem, RuleEntry, rules_import_plan
from alerts.rules import RuleSpec, Subject, rule_spec_validate

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


# Fields a person sets on a rule (the rest are counters and timestamps).
RULE_FIELDS = (
    "action", "ip_cidr", "process", "port_lo", "port_hi", "proto", "zone", "reason", "owner",
    "expires_at", "enabled",
)  # fmt: skip


def rule_create(*, fields: dict) -> Rule:
    """A new rule from validated fields (the audit log records it: audit.receivers)."""
    rule = Rule(**{k: v for k, v in fields.items() if k in RULE_FIELDS})
    rule.full_clean()
    rule.save()
    return rule


def rule_update(*, rule_id: int, fields: dict) -> Rule:
    with transaction.atomic():
        rule = Rule.objects.select_for_update().get(pk=rule_id)
        for k, v in fields.items():
            if k in RULE_FIELDS:
                setattr(rule, k, v)
        rule.full_clean()
        rule.save()
    return rule


def rule_expire(*, rule_id: int, at: datetime | None = None) -> Rule:
    """End a rule now (kept for its history and hit counts, unlike a delete)."""
    at = at or timezone.now()
    with transaction.atomic():
        rule = Rule.objects.select_for_update().get(pk=rule_id)
        if rule.expires_at is None or rule.expires_at > at:
            rule.expires_at = at
            rule.save(update_fields=["expires_at"])
    return rule


def rules_import(*, entries: list[RuleEntry]) -> list[PlanItem]:
    """Create and update rules from a validated file; returns what was done.

    Planned again inside the transaction (not trusted from the dry run the person saw),
    so importing the same file twice, or two imports at once, duplicate nothing. Each rule
    written is audit-logged by audit.receivers, with the request's user as the actor.
    """
    from alerts.selectors import rule_entries_load

    with transaction.atomic():
        # Serialises imports: the plan reads all rules, then writes.
        list(Rule.objects.select_for_update().values_list("pk", flat=True))
        plan = rules_import_plan(entries, rule_entries_load())
        for item in plan:
            if item.change == CREATE:
                rule_create(fields=item.entry.fields())
            elif item.change == UPDATE:
                rule_update(
                    rule_id=item.rule_id,
                    fields={name: getattr(item.entry, name) for name in item.changed_fields},
                )
    return plan
