"""Account reads."""

from datetime import datetime, timedelta

from django.utils import timezone

from accounts.models import Visit


def last_visit_start(*, user, default: timedelta = timedelta(days=1)) -> datetime:
    """Where "since your last visit" starts: the login before this one, else `default` ago."""
    visit = Visit.objects.filter(user=user).first()
    return (visit and visit.previous_login) or (timezone.now() - default)
