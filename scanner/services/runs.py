"""Run life cycle: plan and queue a run, sweep its shards, fingerprint, complete.

States: a run is created `sweeping` with its shards `pending`; each shard task claims its
shard (conditional UPDATE), runs an engine and records observations. When no shard is left,
one caller moves the run to `fingerprinting` (again a conditional UPDATE), re-probes ports
seen recently but missing now, and fans out nmap over batches of hosts; the last fingerprint task
completes the run (scanner.services.results.run_complete, exactly once).
"""

import ipaddress
import logging
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from scanner.findings import Finding
from scanner.models import (
    Engine,
    Port,
    PortObservation,
    RunState,
    ScanPolicy,
    ScanRun,
    ScanShard,
    ShardState,
)
from scanner.recall import ProbeLedger, reprobe_plan
from scanner.services.results import FINGERPRINT_FIELDS, observations_record, run_complete
from scanner.services.scope import scope_load
from scanner.targets import (
    GuardedTargets,
    TargetError,
    format_ports,
    format_targets,
    guard,
    parse_ports,
    parse_targets,
    plan_shards,
    port_list,
)

logger = logging.getLogger(__name__)

ACTIVE_STATES = (RunState.PENDING, RunState.SWEEPING, RunState.FINGERPRINTING)
MIN_RATE, MAX_RATE = 100, 10_000_000
PROGRESS_EVERY_S = 2.0  # shard progress is written at most this often
STREAM_FINGERPRINT_EVERY_S = 5.0
POLICY_TICK_DEDUPE_S = 30


class RunError(TargetError):
    """A run that cannot be started; the message is meant for the user."""


def _no_resolve(name: str) -> list[str]:
    raise TargetError(f"{name!r}: stored targets must be addresses, not names")


def run_start(
    *,
    targets: str | list[str],
    ports: str = "1-65535",
    rate: int = 100_000,
    engine: str = Engine.AUTO,
    fingerprint: bool = True,
    policy: ScanPolicy | None = None,
    scheduled: bool = False,
) -> ScanRun:
    """Validate, scope-check and plan a run, then queue its shards when the row is committed.

    scheduled: started by a schedule tick (beat), which a second beat may send again.
    """
    if engine not in Engine.values:
        raise RunError(f"engine must be one of {', '.join(Engine.values)}, not {engine!r}")
    if not MIN_RATE <= rate <= MAX_RATE:
        raise RunError(f"rate must be between {MIN_RATE} and {MAX_RATE} packets/s")
    port_ranges = parse_ports(ports)
    if len(format_ports(port_ranges)) > ScanRun._meta.get_field("ports").max_length:
        raise RunError("too many separate ports or ranges; use ranges (e.g. 1-1024)")
    guarded = guard(parse_targets(targets), scope_load())
    if len(guarded.zones) != 1:
        raise RunError("targets span internal and external zones; start one run per zone")
    zone = next(iter(guarded.zones))
    plans = plan_shards(guarded, port_ranges, max_probes=settings.PORTMON_SHARD_PROBES)
    with transaction.atomic():
        if policy is not None:
            # Lock the policy row: two schedulers firing at once still give one run.
            ScanPolicy.objects.select_for_update().get(pk=policy.pk)
            if ScanRun.objects.filter(policy=policy, state__in=ACTIVE_STATES).exists():
                raise RunError(f"policy {policy.name!r} already has a run in progress")
            # Two beat processes (a failover pair, a mistake) each send every schedule
            # tick; crontab fires at most once a minute, so a run this recent is that tick's.
            recent = timezone.now() - timedelta(seconds=POLICY_TICK_DEDUPE_S)
            if scheduled and ScanRun.objects.filter(policy=policy, created_at__gte=recent).exists():
                raise RunError(f"policy {policy.name!r} already started a run for this tick")
        now = timezone.now()
        run = ScanRun.objects.create(
            policy=policy,
            targets=format_targets(guarded.networks),
            ports=format_ports(port_ranges),
            rate=rate,
            engine=engine,
            zone=zone,
            fingerprint=fingerprint,
            state=RunState.SWEEPING,
            created_at=now,
            started_at=now,
        )
        shards = ScanShard.objects.bulk_create(
            [
                ScanShard(
                    run=run,
                    index=i,
                    targets=format_targets(plan.targets),
                    ports=format_ports(plan.ports),
                    probes_total=plan.probes,
                )
                for i, plan in enumerate(plans)
            ]
        )
        shard_ids = [s.pk for s in shards] or list(
            ScanShard.objects.filter(run=run).values_list("pk", flat=True)
        )
        transaction.on_commit(lambda: _queue_shards(zone, shard_ids))
    logger.info("run %s planned: %d shard(s), zone %s", run.pk, len(plans), zone)
    return run


def _queue_shards(zone: str, shard_ids: list[int]) -> None:
    from scanner.tasks import sweep_shard

    for shard_id in shard_ids:
        try:
            # No limits in the message: Celery would otherwise send this process's values
            # and the sweep worker's PORTMON_SHARD_*_TIME_LIMIT would be ignored; without
            # them the worker applies its own (the task decorator's, from its settings).
            sweep_shard.apply_async(
                args=[shard_id], queue=f"sweep.{zone}", time_limit=None, soft_time_limit=None
            )
        except Exception as exc:  # broker down: the reaper queues it once it is back
            logger.error("shard %s not queued (%s); the reaper will queue it", shard_id, exc)
            continue
        ScanShard.objects.filter(pk=shard_id).update(queued_at=timezone.now())


def policy_run(*, policy_id: int) -> ScanRun | None:
    """Start a policy's run at a schedule tick; None when disabled, busy or started already."""
    policy = ScanPolicy.objects.filter(pk=policy_id, enabled=True).first()
    if policy is None:
        return None
    try:
        return run_start(
            targets=policy.targets,
            ports=policy.ports,
            rate=policy.rate,
            engine=policy.engine,
            fingerprint=policy.fingerprint,
            policy=policy,
            scheduled=True,
        )
    except TargetError as exc:  # RunError, or a policy saved before a stricter parser
        logger.warning("policy %s not started: %s", policy.name, exc)
        return None


def _stale_before() -> datetime:
    return timezone.now() - timedelta(seconds=settings.PORTMON_HEARTBEAT_TIMEOUT)


def shard_claim(*, shard_id: int, worker: str, token: str) -> ScanShard | None:
    """Take a shard for this delivery; None when it is finished, used up or alive elsewhere.

    A running shard is taken over only when its heartbeat stopped (its worker died). A
    copy redelivered at once after its worker was killed finds the heartbeat still fresh,
    so it waits until the heartbeat is stale — seconds, not the shard's time limit.
    """
    deadline = time.monotonic() + settings.PORTMON_HEARTBEAT_TIMEOUT + 2 * PROGRESS_EVERY_S
    while True:
        shard = _shard_take(shard_id=shard_id, worker=worker, token=token)
        if shard is not None:
            return shard
        alive = ScanShard.objects.filter(
            pk=shard_id, state=ShardState.RUNNING, heartbeat_at__gte=_stale_before()
        ).exists()
        if not alive or time.monotonic() > deadline:
            return None
        time.sleep(1.0)


def _shard_take(*, shard_id: int, worker: str, token: str) -> ScanShard | None:
    max_attempts = settings.PORTMON_SHARD_MAX_ATTEMPTS
    takeable = Q(state=ShardState.PENDING) | Q(
        Q(heartbeat_at__lt=_stale_before()) | Q(heartbeat_at=None), state=ShardState.RUNNING
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
        .filter(Q(heartbeat_at__lt=_stale_before()) | Q(heartbeat_at=None))
        .values_list("pk", "run__zone", "attempts")
    )
    handled = 0
    for shard_id, zone, attempts in dead:
        if attempts >= settings.PORTMON_SHARD_MAX_ATTEMPTS:
            shard_fail(
                shard_id=shard_id,
                error=f"gave up after {attempts} attempts (worker lost or time limit)",
            )
        elif ScanShard.objects.filter(pk=shard_id, state=ShardState.RUNNING).update(
            state=ShardState.PENDING, error="worker lost or hard time limit; retrying"
        ):
            _queue_shards(zone, [shard_id])
        handled += 1
    requeue_before = now - timedelta(seconds=settings.PORTMON_REQUEUE_AFTER)
    pending = sweeping.filter(state=ShardState.PENDING).filter(
        Q(queued_at=None, run__created_at__lt=requeue_before) | Q(queued_at__lt=requeue_before)
    )
    busy_zones = set(
        ScanShard.objects.filter(state=ShardState.RUNNING, heartbeat_at__gte=_stale_before())
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
        _queue_shards(zone, shard_ids)
        handled += len(shard_ids)
    if handled:
        logger.warning(
            "reaped %d shard(s): %d with a dead worker, %d whose message was lost",
            handled,
            len(dead),
            handled - len(dead),
        )
    return handled


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
        _queue_shards(ScanRun.objects.get(pk=shard.run_id).zone, [shard_id])


def fingerprints_reap() -> int:
    """Queue again the ports of fingerprint tasks that died or whose message was lost.

    - A claim whose heartbeat stopped: its task died without a redelivery (hard time limit;
      Celery acknowledges those).
    - Ports no task claimed, in a run fingerprinting for PORTMON_REQUEUE_AFTER in which no
      task is at work (no live claim): their messages were lost (a broker restart).
    Each set of ports gets a fresh token (and time) and one task that claims exactly those
    ports. Returns the number of ports handed on.
    """
    waiting = PortObservation.objects.filter(
        run__state=RunState.FINGERPRINTING, fingerprinted=False, proto="tcp"
    )
    dead_claims = waiting.filter(fingerprint_claimed_at__lt=_stale_before()).exclude(
        fingerprint_claim=""
    )
    quiet_before = timezone.now() - timedelta(seconds=settings.PORTMON_REQUEUE_AFTER)
    lost = waiting.filter(fingerprint_claim="", run__in=_runs_fingerprint_idle(quiet_before))
    handed = 0
    for abandoned in (dead_claims, lost):
        hosts: dict[int, set[str]] = {}
        for run_id, ip in abandoned.values_list("run_id", "host__ip"):
            hosts.setdefault(run_id, set()).add(ip)
        for run_id, ips in hosts.items():
            token = secrets.token_hex(16)
            handed += abandoned.filter(run_id=run_id).update(
                fingerprint_claim=token, fingerprint_claimed_at=timezone.now()
            )
            fingerprint_queue(run_id=run_id, ips=sorted(ips), claim=token)
    if handed:
        logger.warning("re-queued %d port(s) whose fingerprint task died or was lost", handed)
    return handed


def _runs_fingerprint_idle(quiet_before: datetime) -> list[int]:
    """Runs fingerprinting since before quiet_before in which no task holds a live claim."""
    runs = list(
        ScanRun.objects.filter(
            state=RunState.FINGERPRINTING, fingerprinting_at__lt=quiet_before
        ).values_list("pk", flat=True)
    )
    busy = set(
        PortObservation.objects.filter(
            run__in=runs, fingerprinted=False, fingerprint_claimed_at__gte=_stale_before()
        ).values_list("run_id", flat=True)
    )
    return [run_id for run_id in runs if run_id not in busy]


def runs_stalled_end() -> list[int]:
    """End runs with no progress for PORTMON_RUN_STALL_TIMEOUT, saying why.

    A run stuck sweeping (no sweep worker for its zone, shards that never start) fails; a
    run stuck fingerprinting is completed as degraded (its ports are real, only names are
    missing). Either way its policy can start again. Returns the ids of runs ended.
    """
    timeout = settings.PORTMON_RUN_STALL_TIMEOUT
    quiet_before = timezone.now() - timedelta(seconds=timeout)
    ended = []
    for run in ScanRun.objects.filter(
        state__in=ACTIVE_STATES, started_at__lt=quiet_before, source=ScanRun.Source.SCAN
    ):
        last = _run_last_progress(run)
        if last >= quiet_before:
            continue
        reason = f"no progress for {timeout // 60} min (since {last:%Y-%m-%d %H:%M:%S} UTC)"
        if run.state == RunState.FINGERPRINTING:
            ScanRun.objects.filter(pk=run.pk).update(
                degraded=True, error=f"fingerprinting stalled: {reason}"[:2000]
            )
            run_complete(run_id=run.pk)
        else:
            waiting = ScanShard.objects.filter(
                run=run, state__in=[ShardState.PENDING, ShardState.RUNNING]
            ).count()
            ScanRun.objects.filter(pk=run.pk, state=run.state).update(
                state=RunState.FAILED,
                finished_at=timezone.now(),
                error=(
                    f"sweep stalled: {reason}; {waiting} shard(s) never finished "
                    f"(is a worker consuming sweep.{run.zone}?)"
                )[:2000],
            )
        logger.error("run %s ended: %s", run.pk, reason)
        ended.append(run.pk)
    return ended


def _run_last_progress(run: ScanRun) -> datetime:
    from django.db.models import Max

    marks = [run.started_at, run.fingerprinting_at]
    marks += (
        ScanShard.objects.filter(run=run)
        .aggregate(a=Max("heartbeat_at"), b=Max("finished_at"))
        .values()
    )
    marks += (
        PortObservation.objects.filter(run=run)
        .aggregate(a=Max("seen_at"), b=Max("fingerprint_claimed_at"))
        .values()
    )
    return max(m for m in marks if m is not None)


def shard_failed_mark_run(*, shard_id: int) -> None:
    shard = ScanShard.objects.get(pk=shard_id)
    # A run with a missing shard saw only part of its targets: it must not close ports.
    ScanRun.objects.filter(pk=shard.run_id).update(
        degraded=True, error=f"shard {shard.index} failed: {shard.error}"[:2000]
    )
    run_advance(run_id=shard.run_id)


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


def _guarded(targets_text: str) -> GuardedTargets:
    # The worker checks scope again: the scope may have changed since the run was planned.
    return guard(parse_targets(targets_text, resolver=_no_resolve), scope_load())


def _beat_loop(beat: Callable[[], None], stop: threading.Event) -> None:
    """Call beat every PROGRESS_EVERY_S until stopped; a failed write is retried next time."""
    try:
        while not stop.wait(PROGRESS_EVERY_S):
            try:
                beat()
            except Exception:
                logger.warning("heartbeat write failed; retrying", exc_info=True)
    finally:
        connection.close()


def _start_unless_in_transaction(thread: threading.Thread) -> None:
    # Writes made inside the caller's open transaction are invisible to everyone else,
    # and on SQLite the thread's own writes would wait on that transaction's lock: a
    # heartbeat is only meaningful, and only safe, between transactions.
    if not connection.in_atomic_block:
        thread.daemon = True
        thread.start()


class ShardProgress:
    """Collects engine progress and writes it, with the claim's heartbeat, from a side thread.

    Engines call back from inside their event loop, where Django forbids database access;
    the callback only stores numbers, the thread writes them every PROGRESS_EVERY_S. The
    write is also the heartbeat: while it lands, no one else takes the shard.
    """

    def __init__(self, shard_id: int, probes_total: int, claim: str = ""):
        self.shard_id = shard_id
        self.total = probes_total
        self.claim = claim
        self.percent = 0.0
        self.found = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=_beat_loop, args=(self._write, self._stop))

    def __call__(self, percent: float, found: int) -> None:
        self.percent, self.found = percent, found

    def _write(self) -> None:
        mine = {"claim": self.claim} if self.claim else {}
        ScanShard.objects.filter(pk=self.shard_id, state=ShardState.RUNNING, **mine).update(
            probes_done=int(self.total * min(self.percent, 100.0) / 100),
            ports_found=self.found,
            heartbeat_at=timezone.now(),
        )

    def __enter__(self) -> "ShardProgress":
        _start_unless_in_transaction(self._thread)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)


class FindingStream:
    """Records open ports the moment the engine sees them and starts their fingerprints.

    nmap then overlaps the rest of the sweep instead of waiting for it (DESIGN.md:
    streaming open ports to fingerprint tasks saves the most wall time). Hosts with new
    ports are gathered for STREAM_FINGERPRINT_EVERY_S and then queued together, so that one
    nmap run covers many hosts (fingerprint_queue): an nmap process per port found would
    cost more CPU than the sweep can spare. The shard's end queues whatever is left.
    """

    def __init__(self, *, run_id: int, fingerprint: bool):
        self.run_id = run_id
        self.fingerprint = fingerprint
        self.waiting: set[str] = set()  # hosts with ports found since the last flush
        self.window_start = 0.0

    def __call__(self, finding: Finding) -> None:
        observations_record(run_id=self.run_id, findings=[finding], seen_at=timezone.now())
        if not self.fingerprint:
            return
        if not self.waiting:
            self.window_start = time.monotonic()
        self.waiting.add(finding.ip)
        self.tick()

    def tick(self) -> None:
        """Queue the gathered hosts once their window is over (also called on progress, so
        that hosts found just before a quiet stretch of the sweep do not wait for its end)."""
        if time.monotonic() - self.window_start >= STREAM_FINGERPRINT_EVERY_S:
            self.flush()

    def flush(self) -> None:
        """Queue the gathered hosts now (the sweep is over: no more ports to wait for)."""
        if self.waiting:
            fingerprint_queue(run_id=self.run_id, ips=sorted(self.waiting))
            self.waiting.clear()


def shard_sweep(*, shard: ScanShard) -> list[Finding]:
    """Run the engine for one shard and return the open ports it found."""
    from scanner import engines
    from scanner.engines import connect, masscan

    guarded = _guarded(shard.targets)
    ports = parse_ports(shard.ports)
    run = shard.run
    timeout = max(30, settings.SHARD_SOFT_TIME_LIMIT - 30)
    engine = engines.choose(run.engine, list(guarded.networks))
    with ShardProgress(shard.pk, shard.probes_total, shard.claim) as on_progress:
        if engine == Engine.MASSCAN:
            stream = FindingStream(run_id=run.pk, fingerprint=run.fingerprint)
            ledger = ProbeLedger((str(a) for a in guarded.addresses()), ports)
            deadline = time.monotonic() + timeout
            sweep = partial(
                masscan.sweep,
                ports=ports,
                rate=run.rate,
                exclude=list(guarded.exclusions),
                wait=settings.PORTMON_MASSCAN_WAIT,
                interface=settings.MASSCAN_ADAPTER,
                source_ip=settings.MASSCAN_ADAPTER_IP,
                router_mac=settings.MASSCAN_ROUTER_MAC,
                on_finding=stream,
            )

            def progress(percent: float, found: int) -> None:
                on_progress(percent, found)
                stream.tick()

            started = time.monotonic()
            findings = sweep(
                targets=list(guarded.networks),
                retries=settings.PORTMON_MASSCAN_RETRIES,
                timeout=timeout,
                on_progress=progress,
                on_answers=ledger.mark_many,
            )
            logger.info("shard %s: masscan took %.1fs", shard.pk, time.monotonic() - started)
            stream.flush()  # nmap starts on the last window's hosts while the re-probe runs
            return findings + gaps_reprobe(
                shard=shard, ledger=ledger, sweep=sweep, stream=stream, deadline=deadline
            )
        return connect.scan(
            targets=list(guarded.addresses()),
            ports=ports,
            concurrency=settings.PORTMON_CONNECT_CONCURRENCY,
            timeout=settings.PORTMON_CONNECT_TIMEOUT_MS / 1000,
            retries=1,
            on_progress=on_progress,
            deadline=time.monotonic() + timeout,
        )


def gaps_reprobe(
    *,
    shard: ScanShard,
    ledger: ProbeLedger,
    sweep: Callable[..., list[Finding]],
    stream: Callable[[Finding], None],
    deadline: float,
) -> list[Finding]:
    """Probe again what the sweep got no answer for: exact ports, or whole filtering hosts."""
    from scanner.engines import connect

    started = time.monotonic()
    plan = reprobe_plan(ledger)
    found: list[Finding] = []
    if plan.exact:
        # Full TCP connects with retries: a lost SYN or SYN-ACK is sent again.
        candidates = [Finding(ip=ip, port=port) for ip, port in plan.exact]
        for finding in connect.verify(
            candidates,
            timeout=settings.PORTMON_CONNECT_TIMEOUT_MS / 1000,
            retries=2,
            concurrency=settings.PORTMON_CONNECT_CONCURRENCY,
            deadline=deadline,
        ):
            stream(finding)
            found.append(finding)
    if plan.rescan:
        # Hosts that drop many probes (a firewall): a second masscan pass, with retries.
        found += sweep(
            targets=[ipaddress.ip_address(ip) for ip in plan.rescan],
            retries=1,
            timeout=max(1.0, deadline - time.monotonic()),
        )
    logger.info(
        "shard %s: %d probe(s) unanswered on %d host(s) re-probed (%d open), %d filtering "
        "host(s) swept again, %d silent host(s), in %.1fs",
        shard.pk,
        len(plan.exact),
        len({ip for ip, _ in plan.exact}),
        len(found),
        len(plan.rescan),
        len(plan.silent),
        time.monotonic() - started,
    )
    return found


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


def run_advance(*, run_id: int) -> None:
    """Move a run forward when its current stage has nothing left; safe to call any time."""
    if not ScanShard.objects.filter(
        run_id=run_id, state__in=[ShardState.PENDING, ShardState.RUNNING]
    ).exists():
        if ScanRun.objects.filter(pk=run_id, state=RunState.SWEEPING).update(
            state=RunState.FINGERPRINTING, fingerprinting_at=timezone.now()
        ):
            ports_reprobe(run_id=run_id)
            run = ScanRun.objects.get(pk=run_id)
            if run.fingerprint:
                fingerprint_queue(run_id=run_id)
    run = ScanRun.objects.get(pk=run_id)
    if run.state != RunState.FINGERPRINTING:
        return
    pending = PortObservation.objects.filter(run_id=run_id, fingerprinted=False)
    if not run.fingerprint or not pending.exists():
        run_complete(run_id=run_id)


def fingerprint_queue(*, run_id: int, ips: list[str] | None = None, claim: str = "") -> None:
    """Queue nmap for hosts with ports not yet fingerprinted in this run, in batches.

    A task per nmap.BATCH_MAX_HOSTS hosts; a host whose ports another task has claimed
    costs nothing, so queueing a host twice is harmless.
    """
    from scanner.engines.nmap import BATCH_MAX_HOSTS
    from scanner.tasks import fingerprint_hosts

    if ips is None:
        ips = sorted(
            set(
                PortObservation.objects.filter(run_id=run_id, fingerprinted=False).values_list(
                    "host__ip", flat=True
                )
            )
        )
    for start in range(0, len(ips), BATCH_MAX_HOSTS):
        batch = ips[start : start + BATCH_MAX_HOSTS]
        # No limits in the message: the fingerprint worker applies its own (see _queue_shards).
        transaction.on_commit(
            lambda batch=batch: fingerprint_hosts.apply_async(
                args=[run_id, batch, claim], time_limit=None, soft_time_limit=None
            )
        )


def ports_reprobe(*, run_id: int) -> list[Finding]:
    """Connect-check ports seen open recently but missing from this run; record those that answer.

    A single sweep under packet loss misses a few ports at random; a miss must not turn into
    a 'closed' now and a 'new' tomorrow.
    """
    from scanner.engines import connect

    run = ScanRun.objects.get(pk=run_id)
    since = timezone.now() - timedelta(days=settings.PORTMON_REPROBE_DAYS)
    try:
        guarded = _guarded(run.targets)
    except TargetError as exc:
        logger.warning("run %s: re-probe skipped: %s", run_id, exc)
        return []
    wanted_ports = set(port_list(parse_ports(run.ports)))
    seen = set(
        PortObservation.objects.filter(run_id=run_id).values_list("host__ip", "proto", "port")
    )
    candidates = []
    recent = Port.objects.filter(last_seen__gte=since, proto="tcp").values_list("host__ip", "port")
    for ip, port in recent.iterator(chunk_size=5000):
        if port not in wanted_ports or (ip, "tcp", port) in seen:
            continue
        address = ipaddress.ip_address(ip)
        if any(address in net for net in guarded.networks if net.version == address.version):
            if not any(address in ex for ex in guarded.exclusions if ex.version == address.version):
                candidates.append(Finding(ip=ip, port=port))
    if not candidates:
        return []
    found = connect.verify(candidates, timeout=2.0, retries=2)
    observations_record(run_id=run_id, findings=found, seen_at=timezone.now())
    logger.info(
        "run %s: re-probed %d missing port(s), %d answered", run_id, len(candidates), len(found)
    )
    return found


class ClaimHeartbeat:
    """Keeps a fingerprint task's claim on its ports alive while nmap runs (a side thread)."""

    def __init__(self, *, run_id: int, token: str):
        self.ports = PortObservation.objects.filter(
            run_id=run_id, fingerprint_claim=token, fingerprinted=False
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=_beat_loop, args=(self._beat, self._stop))

    def _beat(self) -> None:
        self.ports.update(fingerprint_claimed_at=timezone.now())

    def __enter__(self) -> "ClaimHeartbeat":
        _start_unless_in_transaction(self._thread)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)


def fingerprint_run_hosts(*, run_id: int, ips: list[str], claim: str = "") -> int:
    """nmap -sV the ports this run found open on these hosts; returns ports fingerprinted.

    claim (at most 32 characters) is the task's own token: a redelivered task (its worker
    died) takes back the ports its first delivery had claimed, and the reaper hands
    abandoned ports to a new task under a token of its own (fingerprints_reap).
    """
    from scanner.engines import nmap

    token = claim[:32] or secrets.token_hex(16)
    PortObservation.objects.filter(
        Q(fingerprint_claim="")
        | Q(fingerprint_claim=token)
        | Q(fingerprint_claimed_at__lt=_stale_before()),
        run_id=run_id,
        host__ip__in=ips,
        fingerprinted=False,
        proto="tcp",
    ).update(fingerprint_claim=token, fingerprint_claimed_at=timezone.now())
    pending = list(
        PortObservation.objects.filter(run_id=run_id, fingerprint_claim=token, fingerprinted=False)
        .select_related("host")
        .order_by("port")
    )
    ports_by_host: dict[str, list[int]] = {}
    for obs in pending:
        ports_by_host.setdefault(obs.host.ip, []).append(obs.port)
    found: dict[tuple[str, int], Finding] = {}
    batches = nmap.batches(ports_by_host)
    run_batch = partial(
        nmap.fingerprint_many,
        timeout=settings.PORTMON_NMAP_HOST_TIMEOUT,
        nice=settings.PORTMON_NMAP_NICE,
    )
    # Usually one batch; several (hosts with many ports) run side by side, so that the task
    # still ends within nmap's host timeout and its own time limit.
    with (
        ClaimHeartbeat(run_id=run_id, token=token),
        ThreadPoolExecutor(max_workers=max(1, len(batches))) as pool,
    ):
        outcomes = list(pool.map(lambda batch: run_batch(hosts=batch), batches))
    for results in outcomes:
        for ip, result in results.items():
            if result.error:
                # Unknown, never closed: the port stays open in this run, just without a name.
                logger.warning("run %s: fingerprint of %s failed: %s", run_id, ip, result.error)
            found.update(((f.ip, f.port), f) for f in result.findings)
    for obs in pending:
        finding = found.get((obs.host.ip, obs.port))
        if finding is not None:
            for name in FINGERPRINT_FIELDS:
                setattr(obs, name, getattr(finding, name)[:500])
        obs.fingerprinted = True
    if pending:
        PortObservation.objects.bulk_update(pending, [*FINGERPRINT_FIELDS, "fingerprinted"])
    run_advance(run_id=run_id)
    return len(pending)


def fingerprint_abandon(*, run_id: int, claim: str, reason: str) -> int:
    """A fingerprint task killed by its hard limit: its ports stay open, unnamed (unknown).

    nmap already had its host timeout; running the same hosts again would hang again.
    """
    if not claim:
        return 0
    gave_up = PortObservation.objects.filter(
        run_id=run_id, fingerprint_claim=claim[:32], fingerprinted=False
    ).update(fingerprinted=True)
    logger.warning("run %s: %d port(s) left unnamed: %s", run_id, gave_up, reason)
    run_advance(run_id=run_id)
    return gave_up


def run_progress(*, run_id: int) -> dict:
    """A selector for the CLI and dashboard: percent swept, ports found, state."""
    run = ScanRun.objects.get(pk=run_id)
    shards = list(
        ScanShard.objects.filter(run_id=run_id).values(
            "state", "probes_total", "probes_done", "ports_found"
        )
    )
    total = sum(s["probes_total"] for s in shards) or 1
    done = sum(
        s["probes_total"] if s["state"] == ShardState.DONE else s["probes_done"] for s in shards
    )
    return {
        "state": run.state,
        "percent": 100.0 * done / total,
        "shards": len(shards),
        "shards_done": sum(s["state"] == ShardState.DONE for s in shards),
        "shards_failed": sum(s["state"] == ShardState.FAILED for s in shards),
        "ports_found": PortObservation.objects.filter(run_id=run_id).count(),
        "fingerprinted": PortObservation.objects.filter(run_id=run_id, fingerprinted=True).count(),
        "error": run.error,
    }
