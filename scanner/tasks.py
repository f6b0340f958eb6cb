"""Celery tasks for scanning: thin wrappers that load by id and call a service.

Every task declares soft < hard time limits (tests/scanner/test_core_loop.py walks the
registry). Shards and fingerprint batches are queued without limits in the message, so
the worker that runs them applies these, read from its own settings.
"""

import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from portmon.tasks import HandOnTask
from scanner import sweep
from scanner.services import fingerprints, publish, runs, shards
from scanner.targets import TargetError

logger = logging.getLogger(__name__)


class ShardTask(HandOnTask):
    def hand_on(self, *, task_id: str, arguments: dict, reason: str) -> None:
        shards.shard_lost(shard_id=arguments["shard_id"], reason=reason)


@shared_task(
    name="scanner.sweep_shard",
    base=ShardTask,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=settings.PORTMON_SHARD_SOFT_TIME_LIMIT,
    time_limit=settings.PORTMON_SHARD_TIME_LIMIT,
    # The shard row counts attempts (shard_claim); Celery itself retries without a cap.
    max_retries=None,
)
def sweep_shard(self, shard_id: int) -> None:
    """Sweep one shard; a redelivered or finished shard is a no-op."""
    from scanner.engines import EngineError
    from scanner.engines.routes import RouteRefused

    shard = shards.shard_claim(
        shard_id=shard_id, worker=self.request.hostname or "", token=self.request.id or ""
    )
    if shard is None:
        return
    try:
        findings = sweep.shard_sweep(shard=shard)
    except SoftTimeLimitExceeded:
        # The engine has killed its process group; give the shard back and try again.
        shards.shard_release(shard_id=shard_id, error="soft time limit exceeded")
        raise self.retry(countdown=5) from None
    except RouteRefused as exc:
        # A blackholed target or a route that moved since the first attempt: a retry would
        # meet the same route (or sweep by another one), so the shard fails now, visibly.
        shards.shard_fail(shard_id=shard_id, error=str(exc))
        return
    except Exception as exc:
        # Never leave a shard 'running': give it back for a retry, or fail it visibly.
        if not isinstance(exc, EngineError | TargetError):
            logger.exception("shard %s: unexpected error", shard_id)
        if shard.attempts >= settings.PORTMON_SHARD_MAX_ATTEMPTS:
            shards.shard_fail(shard_id=shard_id, error=str(exc))
            return
        shards.shard_release(shard_id=shard_id, error=str(exc))
        raise self.retry(countdown=10) from None
    ips = shards.shard_complete(shard_id=shard_id, findings=findings)
    if shard.run.fingerprint and ips:
        # Stream to nmap now: fingerprinting overlaps the rest of the sweep.
        publish.fingerprints_publish(run_id=shard.run_id, ips=ips)
    runs.run_advance(run_id=shard.run_id)


def _fingerprint_token(task_id: str | None, claim: str) -> str:
    return claim or (task_id or "").replace("-", "")


class FingerprintTask(HandOnTask):
    def hand_on(self, *, task_id: str, arguments: dict, reason: str) -> None:
        fingerprints.fingerprint_abandon(
            run_id=arguments["run_id"],
            claim=_fingerprint_token(task_id, arguments["claim"]),
            reason=f"fingerprint task {reason}",
        )


@shared_task(
    name="scanner.fingerprint_hosts",
    base=FingerprintTask,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=settings.FINGERPRINT_SOFT_TIME_LIMIT,
    time_limit=settings.FINGERPRINT_TIME_LIMIT,
)
def fingerprint_hosts(self, run_id: int, ips: list[str], claim: str = "") -> int:
    """Returns the number of ports fingerprinted (0: other tasks had them all).

    Without a claim token from the reaper, the task's id is its token: a copy redelivered
    after its worker died takes back the ports the first delivery claimed.
    """
    token = _fingerprint_token(self.request.id, claim)
    return fingerprints.fingerprint_run_hosts(run_id=run_id, ips=ips, claim=token)


# Beat sends a policy's run at each crontab tick; a late copy (workers were down) that
# finds the policy busy is skipped by run_start, so there is no need to expire it.
@shared_task(name="scanner.policy_run", acks_late=True, soft_time_limit=100, time_limit=120)
def policy_run(policy_id: int) -> None:
    runs.policy_run(policy_id=policy_id)


@shared_task(name="scanner.reap_shards", soft_time_limit=100, time_limit=120, expires=60)
def reap_shards() -> None:
    """Every minute (beat): hand on work whose worker died or whose message was lost."""
    shards.shards_reap()
    fingerprints.fingerprints_reap()
    runs.runs_stalled_end()
