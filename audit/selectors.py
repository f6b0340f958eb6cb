"""Audit log reads."""

from django.db.models import QuerySet

from audit.diff import field_changes
from audit.models import AuditEntry


def audit_entries() -> QuerySet[AuditEntry]:
    """The audit log, newest first, with each entry's actor."""
    return AuditEntry.objects.select_related("actor").order_by("-at", "-id")


def audit_page_rows(entries) -> list[AuditEntry]:
    """The entries of a page, each with `changes`: its before/after as field changes."""
    rows = list(entries)
    for entry in rows:
        entry.changes = field_changes(entry.before, entry.after)
    return rows
