"""Beat schedules: the fixed periodic jobs (declared in settings), and one per scan policy."""

import json
from datetime import UTC, datetime

from django.conf import settings
from django.db import transaction
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from scanner.crontab import parse_crontab, parse_hhmm
from scanner.models import ScanPolicy

NEVER = datetime(2000, 1, 1, tzinfo=UTC)


def policy_save(*, fields: dict, policy_id: int | None = None) -> ScanPolicy:
    """Create a policy (policy_id None) or change one from checked fields; ValidationError
    (full_clean) says why not. Its beat entry follows on save (scanner.receivers)."""
    policy = ScanPolicy() if policy_id is None else ScanPolicy.objects.get(pk=policy_id)
    for name, value in fields.items():
        setattr(policy, name, value)
    policy.full_clean()
    policy.save()
    return policy


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


def _fixed_timing(entry: dict) -> dict:
    if "every_minutes" in entry:
        every, _ = IntervalSchedule.objects.get_or_create(
            every=entry["every_minutes"], period=IntervalSchedule.MINUTES
        )
        return {"interval": every, "crontab": None}
    hour, minute = parse_hhmm(getattr(settings, entry["daily_at_setting"]))
    daily, _ = CrontabSchedule.objects.get_or_create(
        minute=str(minute),
        hour=str(hour),
        day_of_week="*",
        day_of_month="*",
        month_of_year="*",
        timezone=settings.TIME_ZONE,
    )
    return {"interval": None, "crontab": daily}


def fixed_schedules_install() -> list[str]:
    """Create or update the periodic jobs of settings.PORTMON_FIXED_SCHEDULES; idempotent.

    Run by `manage.py migrate` (post_migrate). Timing and task follow the declarations;
    an entry an admin disabled stays disabled. A new interval job is due at once (its last
    run is set far in the past, which `doctor` also reads as "beat never ran it"), so the
    reaper and the lost-diff sweep run as soon as beat starts. Returns the names changed.
    """
    changed = []
    with transaction.atomic():
        for entry in settings.PORTMON_FIXED_SCHEDULES:
            wanted = {
                "task": entry["task"],
                **_fixed_timing(entry),
                "expire_seconds": entry.get("expire_seconds"),
            }
            task = PeriodicTask.objects.filter(name=entry["name"]).first()
            if task is None:
                PeriodicTask.objects.create(
                    name=entry["name"],
                    enabled=True,
                    last_run_at=NEVER if wanted["interval"] else None,
                    **wanted,
                )
            elif any(getattr(task, field) != value for field, value in wanted.items()):
                for field, value in wanted.items():
                    setattr(task, field, value)
                task.save()
            else:
                continue
            changed.append(entry["name"])
    return changed
