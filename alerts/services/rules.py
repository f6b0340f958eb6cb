"""Rule services: create, update, expire, and the dry run (which recent events would a
draft rule have matched)."""

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from alerts.models import OPEN_STATES, AlertEvent, EventAudit, EventState, Rule, RuleAction
from alerts.rule_files import (
    CREATE,
    RULE_FIELDS,
    UPDATE,
    PlanItem,
    RuleEntry,
    rules_import_plan,
)
from audit.services import audit_record

# Ids per IN (...) list when a rule resolves events (SQLite's bound-variable limit).
CHUNK = 900


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
                assert item.rule_id is not None  # an update names the rule it changes
                rule_update(
                    rule_id=item.rule_id,
                    fields={name: getattr(item.entry, name) for name in item.changed_fields},
                )
    return plan


def rule_open_events_resolve(*, rule_id: int, actor=None, at: datetime | None = None) -> list[int]:
    """An allow rule resolves the open events it matches (the dry run's list, read again
    here): each becomes ignored, suppressed by the rule, with an audit row naming it.
    An event triaged meanwhile into a closed state is left alone."""
    from alerts.selectors import rule_open_matches, rule_spec_of

    at = at or timezone.now()
    rule = Rule.objects.get(pk=rule_id)
    if rule.action != RuleAction.ALLOW:
        return []
    ids = rule_open_matches(spec=rule_spec_of(rule))
    comment = f"allowed by rule #{rule.pk}: {rule.reason}"[:300]
    resolved: list[int] = []
    with transaction.atomic():
        for start in range(0, len(ids), CHUNK):
            rows = list(
                AlertEvent.objects.select_for_update()
                .filter(pk__in=ids[start : start + CHUNK], state__in=OPEN_STATES)
                .values_list("pk", "state")
            )
            AlertEvent.objects.filter(pk__in=[pk for pk, _ in rows]).update(
                state=EventState.IGNORED,
                open_key=None,
                resolved_at=at,
                updated_at=at,
                accepted_until=None,
                suppressed=True,
                rule=rule,
            )
            EventAudit.objects.bulk_create(
                [
                    EventAudit(
                        event_id=pk,
                        actor=actor,
                        action="rule",
                        from_state=state,
                        to_state=EventState.IGNORED,
                        at=at,
                        comment=comment,
                    )
                    for pk, state in rows
                ]
            )
            resolved.extend(pk for pk, _ in rows)
        if resolved:
            audit_record(
                action="rule.resolve",
                target=rule,
                after={"events_resolved": len(resolved), "first_ids": resolved[:100]},
                actor=actor,
            )
    return resolved
