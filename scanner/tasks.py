"""Celery tasks for scanning: thin wrappers that load by id and call a service."""

import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from scanner.services import runs

logger = logging.getLogger(__name__)


@shared_task(
    name="scanner.sweep_shard",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=settings.SHARD_SOFT_TIME_LIMIT,
    time_limit=settings.SHARD_TIME_LIMIT,
    # The shard row counts attempts (shard_claim); Celery itself retries without a cap.
    max_retries=None,
)
def sweep_shard(self, shard_id: int) -> None:
    """Sweep one shard; a redelivered or finished shard is a no-op."""
    from scanner.engines import EngineError

    shard = runs.shard_claim(shard_id=shard_id, worker=self.request.hostname or "")
    if shard is None:
        return
    try:
        findings = runs.shard_sweep(shard=shard)
    except SoftTimeLimitExceeded:
        # The engine has killed its process group; give the shard back and try again.
        runs.shard_release(shard_id=shard_id, error="soft time limit exceeded")
        raise self.retry(countdown=5) from None
    except Exception as exc:
        # Never leave a shard 'running': give it back for a retry, or fail it visibly.
        if not isinstance(exc, EngineError | runs.TargetError):
            logger.exception("shard %s: unexpected error", shard_id)
        if shard.attempts >= settings.PORTMON_SHARD_MAX_ATTEMPTS:
            runs.shard_fail(shard_id=shard_id, error=str(exc))
            return
        runs.shard_release(shard_id=shard_id, error=str(exc))
        raise self.retry(countdown=10) from None
    ips = runs.shard_complete(shard_id=shard_id, findings=findings)
    if shard.run.fingerprint and ips:
        # Stream to nmap now: fingerprinting overlaps the rest of the sweep.
        runs.fingerprint_queue(run_id=shard.run_id, ips=ips)
    runs.run_advance(run_id=shard.run_id)


@shared_task(
    name="scanner.fingerprint_hosts",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=settings.PORTMON_NMAP_HOST_TIMEOUT + 60,
    time_limit=settings.PORTMON_NMAP_HOST_TIMEOUT + 120,
)
def fingerprint_hosts(self, run_id: int, ips: list[str], claim: str = "") -> int:
    """Returns the number of ports fingerprinted (0: other tasks had them all).

    Without a claim token from the reaper, the task's id is its token: a copy redelivered
    after its worker died takes back the ports the first delivery claimed.
    """
    token = claim or (self.request.id or "").replace("-", "")
    return runs.fingerprint_run_hosts(run_id=run_id, ips=ips, claim=token)


@shared_task(name="scanner.policy_run", acks_late=True, time_limit=120)
def policy_run(policy_id: int) -> None:
    runs.policy_run(policy_id=policy_id)


@shared_task(name="scanner.reap_shards", time_limit=120)
def reap_shards() -> None:
    """Shards and fingerprint tasks lost to a hard time limit (Celery acks those)."""
    runs.shards_reap()
    runs.fingerprints_reap()
