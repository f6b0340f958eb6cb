"""Celery tasks of the alerts app: thin, by id, idempotent."""

from celery import shared_task
from django.db import OperationalError

from alerts.services.diff import diffs_pending_run, run_diff
from alerts.services.triage import acceptances_lapse as acceptances_lapse_run


@shared_task(
    name="alerts.diff_run",
    soft_time_limit=300,
    time_limit=360,
    acks_late=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=5,
)
def diff_run(run_id: int) -> dict | None:
    """Diff a finished run (queued when the scanner finishes one); a run already diffed
    is a no-op (diffed_at is claimed once)."""
    result = run_diff(run_id=run_id)
    return result.as_dict() if result else None


@shared_task(name="alerts.diff_pending", soft_time_limit=1740, time_limit=1800, expires=600)
def diff_pending() -> list[int]:
    """Every 10 minutes (beat): diff finished runs whose diff was lost."""
    return diffs_pending_run()


@shared_task(name="alerts.acceptances_lapse", soft_time_limit=240, time_limit=300, expires=600)
def acceptances_lapse() -> list[int]:
    """Every 10 minutes (beat): ignored events whose accepted risk ran out reopen."""
    return acceptances_lapse_run()
