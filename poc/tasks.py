"""Celery tasks for PoC checks: thin wrappers that load by id and call a service."""

from celery import shared_task
from django.conf import settings

from poc.services import runs
from poc.services.chain import pocs_chain, pocs_cover
from poc.services.reaper import pocs_reap
from portmon.tasks import HandOnTask


def _token(task_id: str | None) -> str:
    return (task_id or "").replace("-", "")[:32]


class PocTask(HandOnTask):
    def hand_on(self, *, task_id: str, arguments: dict, reason: str) -> None:
        # The check's process died with the task (PR_SET_PDEATHSIG). No verdict: the run
        # ends failed, a finding stays.
        runs.poc_abandon(check_id=arguments["check_id"], token=_token(task_id), reason=reason)


@shared_task(
    name="poc.run_check",
    base=PocTask,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=settings.POC_SOFT_TIME_LIMIT,
    time_limit=settings.POC_TIME_LIMIT,
)
def run_check(self, check_id: int) -> bool:
    """Returns whether a verdict was recorded (a redelivered or finished run is a no-op)."""
    return runs.poc_run(check_id=check_id, token=_token(self.request.id)) is not None


@shared_task(name="poc.reap", soft_time_limit=100, time_limit=120, expires=60)
def reap() -> int:
    """Every minute (beat): hand on lost runs, queue the daily re-check of open findings."""
    return pocs_reap()


@shared_task(name="poc.chain", acks_late=True, soft_time_limit=100, time_limit=120)
def chain(event_ids: list[int]) -> int:
    """Queue the checks that apply to these newly raised events (kinds and zones as set)."""
    return len(pocs_chain(event_ids=event_ids))


@shared_task(name="poc.cover", acks_late=True, soft_time_limit=100, time_limit=120)
def cover(run_id: int) -> int:
    """Queue the first checks of the exposures a diffed run found (baseline included)."""
    return len(pocs_cover(run_id=run_id))
