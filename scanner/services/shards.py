"""The shard life cycle: claim (with a heartbeat), release, fail, complete, reap."""

import logging
import time
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from scanner.engines import routes
from scanner.findings import Finding
from scanner.models import RunState, ScanRun, ScanShard, ShardState
from scanner.services import publish
from scanner.services.liveness import HEARTBEAT_EVERY_S, stale_before
from scanner.services.results import observations_record
from scanner.services.runs import run_advance

logger = logging.getLogger(__name__)


def shard_claim(*, shard_id: int, worker: str, token: str) -> ScanShard | None:
    """Take a shard for this delivery; None when it is finished, used up or alive elsewhere.

    A running shard is taken over only when its heartbeat stopped (its worker died). A
    copy redelivered at once after its worker was killed finds the heartbeat still fresh,
    so it waits until the heartbeat is stale — seconds, not the shard's time limit.
    """
    deadline = time.monotonic() + settings.PORTMON_HEARTBEAT_TIMEOUT + 2 * HEARTBEAT_EVERY_S
    while True:
        shard = _shard_take(shard_id=shard_id, worker=worker, token=token)
        if shard is not None:
            return shard
        alive = ScanShard.objects.filter(
            pk=shard_id, state=ShardState.RUNNING, heartbeat_at__gte=stale_before()
        ).exists()
        if not alive or time.monotonic() > deadline:
            return None
        time.sleep(1.0)


def _shard_take(*, shard_id: int, worker: str, token: str) -> ScanShard | None:
    max_attempts = settings.PORTMON_SHARD_MAX_ATTEMPTS
    takeable = Q(state=ShardState.PENDING) | Q(
        Q(heartbeat_at__lt=stale_before()) | Q(heartbeat_at=None), state=ShardState.RUNNING
    )
    now = timezone.now()
    claimed = ScanShard.objects.filter(
        takeable, pk=shard_id, attempts__lt=max_attempts, run__state=RunState.SWEEPING
    ).update(
        state=ShardState.RUNNING,
        attempts=F("attempts") + 1,
        worker=worker[:200],
        claim=token[:64],
        started_at=now,
        heartbeat_at=now,
        probes_done=0,
    )
    if claimed == 1:
        return ScanShard.objects.select_related("run").get(pk=shard_id)
    # A redelivery after the last attempt (worker died or hard limit hit): fail it visibly.
    gave_up = ScanShard.objects.filter(takeable, pk=shard_id, attempts__gte=max_attempts).update(
        state=ShardState.FAILED,
        finished_at=now,
        error=f"gave up after {max_attempts} attempts (worker lost or time limit)",
    )
    if gave_up:
        shard_failed_mark_run(shard_id=shard_id)
    return None


def shard_route_plan_check(*, shard_id: int, plan: dict) -> str | None:
    """Keep the route plan of a shard's first attempt; a later one whose route differs gets
    the one-line reason back (the caller fails the shard), else None."""
    if ScanShard.objects.filter(pk=shard_id, route_plan__isnull=True).update(route_plan=plan):
        return None
    first = ScanShard.objects.values_list("route_plan", flat=True).get(pk=shard_id)
    assert first is not None  # set above or by an earlier attempt, never cleared
    return routes.plan_change(first, plan)


def shard_release(*, shard_id: int, error: str) -> None:
    """Put a shard back to pending after a soft time limit or engine error (to be retried)."""
    ScanShard.objects.filter(pk=shard_id, state=ShardState.RUNNING).update(
        state=ShardState.PENDING, error=error[:2000]
    )


def shard_fail(*, shard_id: int, error: str) -> None:
    ScanShard.objects.filter(pk=shard_id).exclude(state=ShardState.DONE).update(
        state=ShardState.FAILED, finished_at=timezone.now(), error=error[:2000]
    )
    shard_failed_mark_run(shard_id=shard_id)


def shard_failed_mark_run(*, shard_id: int) -> None:
    shard = ScanShard.objects.get(pk=shard_id)
    # A run with a missing shard saw only part of its targets: it must not close ports.
    ScanRun.objects.filter(pk=shard.run_id).update(
        degraded=True, error=f"shard {shard.index} failed: {shard.error}"[:2000]
    )
    run_advance(run_id=shard.run_id)


def shard_lost(*, shard_id: int, reason: str) -> None:
    """The delivery running a shard is gone for good (hard time limit): hand it on now."""
    shard = ScanShard.objects.filter(pk=shard_id, state=ShardState.RUNNING).first()
    if shard is None:
        return
    if shard.attempts >= settings.PORTMON_SHARD_MAX_ATTEMPTS:
        shard_fail(shard_id=shard_id, error=f"gave up after {shard.attempts} attempts: {reason}")
        return
    if ScanShard.objects.filter(pk=shard_id, state=ShardState.RUNNING).update(
        state=ShardState.PENDING, error=f"{reason}; retrying"[:2000]
    ):
        publish.shards_publish(zone=ScanRun.objects.get(pk=shard.run_id).zone, shard_ids=[shard_id])


def shard_complete(*, shard_id: int, findings: list[Finding]) -> list[str]:
    """Record a shard's findings and mark it done; returns the hosts it found ports on.

    Findings are kept even when the shard was handed on meanwhile (its heartbeat was
    late): observations are unique per run and port, so a second sweep adds nothing twice.
    """
    shard = ScanShard.objects.get(pk=shard_id)
    now = timezone.now()
    with transaction.atomic():
        observations_record(run_id=shard.run_id, findings=findings, seen_at=now)
        ScanShard.objects.filter(pk=shard_id).exclude(state=ShardState.FAILED).update(
            state=ShardState.DONE,
            finished_at=now,
            probes_done=F("probes_total"),
            ports_found=len({f.key for f in findings}),
            error="",
        )
    return sorted({f.ip for f in findings})


def shards_reap() -> int:
    """Hand on shards whose worker died, and queue shards whose message never arrived.

    Beat runs this every minute. Three cases:
    - running with a stopped heartbeat (worker lost, or killed by its hard time limit:
      Celery acknowledges those, so nothing would redeliver them): queued again, or
      failed visibly after PORTMON_SHARD_MAX_ATTEMPTS;
    - pending and never queued (the broker was down when the run was planned);
    - pending and queued, but no shard of its zone has run for PORTMON_REQUEUE_AFTER
      (the message was lost, e.g. a broker restart without persistence).
    A copy too many is harmless: the claim lets one delivery run the shard.
    Returns the number of shards handled.
    """
    now = timezone.now()
    sweeping = ScanShard.objects.filter(run__state=RunState.SWEEPING)
    dead = list(
        sweeping.filter(state=ShardState.RUNNING)
        .filter(Q(heartbeat_at__lt=stale_before()) | Q(heartbeat_at=None))
        .values_list("pk", flat=True)
    )
    for shard_id in dead:
        shard_lost(shard_id=shard_id, reason="worker lost or hard time limit")
    handled = len(dead)
    requeue_before = now - timedelta(seconds=settings.PORTMON_REQUEUE_AFTER)
    pending = sweeping.filter(state=ShardState.PENDING).filter(
        Q(queued_at=None, run__created_at__lt=requeue_before) | Q(queued_at__lt=requeue_before)
    )
    busy_zones = set(
        ScanShard.objects.filter(state=ShardState.RUNNING, heartbeat_at__gte=stale_before())
        .values_list("run__zone", flat=True)
        .distinct()
    )
    lost: dict[str, list[int]] = {}
    for shard_id, zone, queued_at in pending.values_list("pk", "run__zone", "queued_at"):
        # A zone's sweep worker takes one shard at a time: while one runs, the others
        # are simply waiting their turn in the queue.
        if queued_at is None or zone not in busy_zones:
            lost.setdefault(zone, []).append(shard_id)
    for zone, shard_ids in lost.items():
        publish.shards_publish(zone=zone, shard_ids=shard_ids)
        handled += len(shard_ids)
    if handled:
        logger.warning(
            "reaped %d shard(s): %d with a dead worker, %d whose message was lost",
            handled,
            len(dead),
            handled - len(dead),
        )
    return handled
