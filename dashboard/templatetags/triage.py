"""Template helpers of the triage pages (events list, rule form): {% load triage %}."""

from datetime import datetime

from django import template
from django.utils import timezone

register = template.Library()


@register.filter
def age(value: datetime | None, now: datetime | None = None) -> str:
    """How long ago, in its largest unit: "now", "45 min", "5 h", "3 d"."""
    if value is None:
        return ""
    seconds = max(0, int(((now or timezone.now()) - value).total_seconds()))
    if seconds < 60:
        return "now"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"
