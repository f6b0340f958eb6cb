"""Rule services: create, update, expire, and the dry run (which recent events would a
draft rule have matched)."""

from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from alerts.models import AlertEvent, Rule
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
    matched = []
    for event in events.order_by("-created_at", "-id"):
        detail = event.detail or {}
        net = event.host.network
        subject = Subject(
            ip=event.host.ip,
            proto=event.proto,
            port=event.port,
            zone=detail.get("zone") or (net.zone if net else ""),
            process=detail.get("process", ""),
        )
        if spec.matches(subject):
            matched.append(event)
    return matched


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
