"""Keep each scheduled scan policy in sync with a django-celery-beat periodic task."""

import json

from celery.schedules import crontab
from django.conf import settings
from django.db import transaction
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from scanner.models import ScanPolicy
from scanner.targets import TargetError


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


def task_name(policy_id: int) -> str:
    return f"scan policy {policy_id}"


def policy_schedule_sync(*, policy: ScanPolicy) -> PeriodicTask | None:
    """Create, update or remove the periodic task of a policy (idempotent)."""
    name = task_name(policy.pk)
    with transaction.atomic():
        if not policy.schedule.strip():
            PeriodicTask.objects.filter(name=name).delete()
            return None
        fields = parse_crontab(policy.schedule)
        schedule, _ = CrontabSchedule.objects.get_or_create(timezone=settings.TIME_ZONE, **fields)
        task, _ = PeriodicTask.objects.update_or_create(
            name=name,
            defaults={
                "task": "scanner.policy_run",
                "crontab": schedule,
                "interval": None,
                "kwargs": json.dumps({"policy_id": policy.pk}),
                "queue": "default",
                "enabled": policy.enabled,
                "description": f"Scan policy {policy.name}",
            },
        )
        return task


def policy_schedule_remove(*, policy_id: int) -> None:
    PeriodicTask.objects.filter(name=task_name(policy_id)).delete()
