"""Rule services: create, update, expire, and the dry run (which recent events would a
draft rule have matched)."""

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from alerts.models import Rule
from alerts.rule_files import (
    CREATE,
    RULE_FIELDS,
    UPDATE,
    PlanItem,
    RuleEntry,
    rules_import_plan,
)


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
