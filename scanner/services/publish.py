"""The one place that queues scanner tasks, by name (services never import scanner.tasks).

Shards and fingerprint batches are published without time limits in the message: Celery
would otherwise send this process's values, and the worker's own settings
(PORTMON_SHARD_*_TIME_LIMIT, PORTMON_NMAP_PORT_TIMEOUT) would be ignored.
"""

import functools
import importlib
import logging

from celery import Task, current_app
from django.db import transaction
from django.utils import timezone

from scanner.engines.nmap import BATCH_MAX_HOSTS
from scanner.models import ScanShard

logger = logging.getLogger(__name__)

SWEEP_SHARD = "scanner.sweep_shard"
FINGERPRINT_HOSTS = "scanner.fingerprint_hosts"
WORKER_LIMITS = {"time_limit": None, "soft_time_limit": None}


def task_by_name(name: str) -> Task:
    """A registered task by its name ("app.task"), loading its app's tasks module if needed."""
    # The registry, not send_task: it honours task_always_eager (scan --local) and routes.
    # A worker has every task registered; a web or command process loads the app's tasks
    # module on first use ("scanner.sweep_shard" lives in scanner.tasks). Not the loader's
    # import_default_modules(): in a worker that runs django.setup() again and resets logging.
    if name not in current_app.tasks:
        importlib.import_module(f"{name.partition('.')[0]}.tasks")
    return current_app.tasks[name]


def shards_publish(*, zone: str, shard_ids: list[int]) -> None:
    """Queue shards on their zone's sweep queue; one the broker refused is left to the reaper."""
    for shard_id in shard_ids:
        try:
            task_by_name(SWEEP_SHARD).apply_async(
                args=[shard_id], queue=f"sweep.{zone}", **WORKER_LIMITS
            )
        except Exception as exc:  # broker down: the reaper queues it once it is back
            logger.error("shard %s not queued (%s); the reaper will queue it", shard_id, exc)
            continue
        ScanShard.objects.filter(pk=shard_id).update(queued_at=timezone.now())


def fingerprints_publish(*, run_id: int, ips: list[str], claim: str = "") -> None:
    """Queue nmap for these hosts of a run once the caller's transaction commits.

    A task per BATCH_MAX_HOSTS hosts; a host whose ports another task has claimed
    costs nothing, so queueing a host twice is harmless.
    """
    for start in range(0, len(ips), BATCH_MAX_HOSTS):
        batch = ips[start : start + BATCH_MAX_HOSTS]
        transaction.on_commit(functools.partial(_fingerprints_send, run_id, batch, claim))


def _fingerprints_send(run_id: int, ips: list[str], claim: str) -> None:
    task_by_name(FINGERPRINT_HOSTS).apply_async(args=[run_id, ips, claim], **WORKER_LIMITS)
