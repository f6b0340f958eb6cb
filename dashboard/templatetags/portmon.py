"""Template helpers loaded on every page (TEMPLATES builtins): dates, roles, mail."""

from datetime import date, datetime

from django import template
from django.conf import settings
from django.utils import formats, timezone
from django.utils.html import format_html

from accounts.roles import has_role as _has_role

register = template.Library()


@register.filter
def when(value):
    """A moment as <time>, in TIME_ZONE and with the zone: "2026-12-06 18:42 UTC".

    The one date format of the dashboard (DATETIME_FORMAT in portmon/formats); a date
    without a time shows as "2026-12-06"; None and "" show as nothing.
    """
    if value in (None, ""):
        return ""
    if isinstance(value, datetime):
        if timezone.is_aware(value):
            value = timezone.localtime(value)
        return format_html(
            '<time datetime="{}">{}</time>',
            value.isoformat(timespec="seconds"),
            formats.date_format(value, "DATETIME_FORMAT"),
        )
    if isinstance(value, date):
        return format_html(
            '<time datetime="{}">{}</time>', value.isoformat(), formats.date_format(value)
        )
    return value


@register.filter
def age(value, now=None) -> str:
    """How long ago a moment was, in the largest sensible unit: "45 min", "5 h", "3 d"."""
    if not isinstance(value, datetime):
        return ""
    seconds = max(0, int(((now or timezone.now()) - value).total_seconds()))
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


@register.filter
def has_role(user, role: str) -> bool:
    """{% if user|has_role:"admin" %}: the same check as the views' role_required."""
    return _has_role(user, role)


@register.simple_tag
def mail_destination() -> str:
    """Where alert mail goes with the current settings, in words for the first-run note."""
    backend = settings.EMAIL_BACKEND.rsplit(".", 2)[-2]
    if backend == "smtp":
        return f"to the SMTP server {settings.EMAIL_HOST}:{settings.EMAIL_PORT}"
    if backend == "filebased":
        return f"into files in {settings.EMAIL_FILE_PATH} (no EMAIL_HOST set)"
    if backend == "console":
        return "to the web/worker console (EMAIL_BACKEND=console)"
    return f"through {settings.EMAIL_BACKEND}"
