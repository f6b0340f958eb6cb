"""Writes of the audit log."""

from django.db import models

from audit.context import actor_now
from audit.models import AuditEntry


def audit_record(
    *,
    action: str,
    target: models.Model,
    before: dict | None = None,
    after: dict | None = None,
    actor=None,
) -> AuditEntry:
    """One audit row; the actor defaults to the person behind the current request."""
    return AuditEntry.objects.create(
        actor=actor if actor is not None else actor_now(),
        action=action,
        object_type=target._meta.label_lower,
        object_id=str(target.pk or ""),
        object_repr=str(target)[:200],
        before=before,
        after=after,
    )


def snapshot(instance: models.Model) -> dict:
    """The stored fields of a row, as JSON-friendly values (the audit's before/after)."""
    return {f.attname: f.value_from_object(instance) for f in instance._meta.concrete_fields}
