"""Pure parsing of schedule text: crontab lines for policies, HH:MM for daily jobs."""

import re

from celery.schedules import crontab

from scanner.targets import TargetError

_HHMM = re.compile(r"^([01]?[0-9]|2[0-3]):([0-5][0-9])$")


def parse_crontab(text: str) -> dict[str, str]:
    """'minute hour day-of-month month day-of-week' -> CrontabSchedule fields; errors for users."""
    fields = text.split()
    if len(fields) != 5:
        raise TargetError(
            f"schedule {text!r} must have 5 fields: minute hour day-of-month month day-of-week"
        )
    names = ["minute", "hour", "day_of_month", "month_of_year", "day_of_week"]
    values = dict(zip(names, fields, strict=True))
    try:
        crontab(**values)
    except (ValueError, TypeError) as exc:
        raise TargetError(f"schedule {text!r} is not a valid crontab: {exc}") from None
    return values


def parse_hhmm(text: str) -> tuple[int, int]:
    """'08:00' -> (8, 0); anything else is an error."""
    match = _HHMM.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a time of day as HH:MM")
    return int(match.group(1)), int(match.group(2))
