"""Audit log reads."""

from django.db.models import QuerySet

from audit.models import AuditEntry


def audit_entries() -> QuerySet[AuditEntry]:
    """The audit log, newest first, with each entry's actor."""
    return AuditEntry.objects.select_related("actor").order_by("-at", "-id")
