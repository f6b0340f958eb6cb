"""Account writes: the login visits behind "since your last visit"."""

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from accounts.models import Visit


def visit_record(*, user, at: datetime | None = None) -> Visit:
    """At login: the login before this one becomes the start of 'since your last visit'."""
    at = at or timezone.now()
    with transaction.atomic():
        visit, _ = Visit.objects.select_for_update().get_or_create(user=user)
        visit.previous_login = visit.current_login
        visit.current_login = at
        visit.save(update_fields=["previous_login", "current_login"])
    return visit
