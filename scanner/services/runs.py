"""Run life cycle: plan and queue a run, advance it from stage to stage, end stalled runs.

States: a run is created `sweeping` with its shards `pending` (scanner.services.shards);
when no shard is left, one caller moves the run to `fingerprinting` (a conditional UPDATE),
re-probes ports seen recently but missing now, and fans out nmap over batches of hosts
(scanner.services.fingerprints); the last fingerprint task completes the run
(scanner.services.results.run_complete, exactly once).
"""

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from scanner import selectors
from scanner.models import (
    Engine,
    PortObservation,
    RunState,
    ScanPolicy,
    ScanRun,
    ScanShard,
    ShardState,
)
from scanner.services import publish
from scanner.services.reprobe import ports_reprobe
from scanner.services.results import run_complete
from scanner.services.scope import scope_load
from scanner.targets import (
    TargetError,
    format_ports,
    format_targets,
    guard,
    parse_ports,
    parse_targets,
    plan_shards,
)

logger = logging.getLogger(__name__)

ACTIVE_STATES = (RunState.PENDING, RunState.SWEEPING, RunState.FINGERPRINTING)
MIN_RATE, MAX_RATE = 100, 10_000_000
POLICY_TICK_DEDUPE_S = 30


class RunError(TargetError):
    """A run that cannot be started; the message is meant for the user."""


def ports_text_check(port_ranges: tuple[tuple[int, int], ...]) -> str:
    """The ports as stored on each shard; refused when they would not fit its column."""
    text = format_ports(port_ranges)
    limit = ScanShard._meta.get_field("ports").max_length
    if limit is not None and len(text) > limit:
        raise RunError(
            f"too many separate port ranges ({len(text)} characters once merged, the limit "
            f"is {limit}); use ranges such as 1-1024"
        )
    return text


def run_start(
    *,
    targets: str | list[str],
    ports: str = "1-65535",
    udp_ports: str = "",
    rate: int = 100_000,
    engine: str = Engine.AUTO,
    fingerprint: bool = True,
    policy: ScanPolicy | None = None,
    scheduled: bool = False,
) -> ScanRun:
    """Validate, scope-check and plan a run, then queue its shards when the row is committed.

    scheduled: started by a schedule tick (beat), which a second beat may send again.
    ports / udp_ports: TCP and UDP port lists; either may be blank, not both. UDP shards are
    planned apart (ScanShard.proto) and sized by PORTMON_UDP_SHARD_PROBES: a silent UDP port
    costs a whole timeout per try, a TCP probe a packet.
    """
    if engine not in Engine.values:
        raise RunError(f"engine must be one of {', '.join(Engine.values)}, not {engine!r}")
    if not MIN_RATE <= rate <= MAX_RATE:
        raise RunError(f"rate must be between {MIN_RATE} and {MAX_RATE} packets/s")
    port_ranges = parse_ports(ports) if (ports or "").strip() or not udp_ports else ()
    udp_ranges = parse_ports(udp_ports) if (udp_ports or "").strip() else ()
    if port_ranges:
        ports_text_check(port_ranges)
    if udp_ranges:
        ports_text_check(udp_ranges)
    guarded = guard(parse_targets(targets), scope_load())
    if len(guarded.zones) != 1:
        raise RunError("targets span internal and external zones; start one run per zone")
    zone = next(iter(guarded.zones))
    _routes_check(engine=engine, networks=list(guarded.networks))
    plans = [("tcp", p) for p in _plans(guarded, port_ranges, settings.PORTMON_SHARD_PROBES)]
    plans += [("udp", p) for p in _plans(guarded, udp_ranges, settings.PORTMON_UDP_SHARD_PROBES)]
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
            udp_ports=format_ports(udp_ranges),
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
                    proto=proto,
                    probes_total=plan.probes,
                )
                for i, (proto, plan) in enumerate(plans)
            ]
        )
        shard_ids = [s.pk for s in shards] or list(
            ScanShard.objects.filter(run=run).values_list("pk", flat=True)
        )
        transaction.on_commit(lambda: publish.shards_publish(zone=zone, shard_ids=shard_ids))
    logger.info("run %s planned: %d shard(s), zone %s", run.pk, len(plans), zone)
    return run


def _plans(guarded, port_ranges: tuple, max_probes: int) -> list:
    return plan_shards(guarded, port_ranges, max_probes=max_probes) if port_ranges else []


def _routes_check(*, engine: str, networks: list) -> None:
    """Refuse now a masscan run whose targets are blackholed or unreachable from here.

    The sweep worker resolves its routes again (and alone decides interfaces and MACs):
    this host may not be the scanner host. But a route that drops everything is a mistake
    the user should hear of at once, not as failed shards later. Only for an explicit
    masscan: what "auto" picks depends on the worker's privileges, not on this process's.
    """
    from scanner.engines import EngineError, routes

    v4 = [n for n in networks if n.version == 4]
    if engine != Engine.MASSCAN or not v4:
        return
    try:
        refused = routes.refusal(routes.resolve(v4))
    except EngineError as exc:  # no `ip` here: the worker checks
        logger.warning("routes not checked before the run: %s", exc)
        return
    if refused:
        raise RunError(refused)


def policy_start(*, policy: ScanPolicy, scheduled: bool = False) -> ScanRun:
    """A run of what the policy says (at a schedule tick, or now by hand); RunError says why not."""
    return run_start(
        targets=policy.targets,
        ports=policy.ports,
        udp_ports=policy.udp_ports,
        rate=policy.rate,
        engine=policy.engine,
        fingerprint=policy.fingerprint,
        policy=policy,
        scheduled=scheduled,
    )


def policy_run_now(*, policy_id: int) -> ScanRun:
    """Start a policy's run at once (an admin's button, page or API); ScanPolicy.DoesNotExist,
    or RunError saying why not."""
    return policy_start(policy=ScanPolicy.objects.get(pk=policy_id))


def policy_run(*, policy_id: int) -> ScanRun | None:
    """Start a policy's run at a schedule tick; None when disabled, busy or started already."""
    policy = ScanPolicy.objects.filter(pk=policy_id, enabled=True).first()
    if policy is None:
        return None
    try:
        return policy_start(policy=policy, scheduled=True)
    except TargetError as exc:  # RunError, or a policy saved before a stricter parser
        logger.warning("policy %s not started: %s", policy.name, exc)
        return None


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
                publish.fingerprints_publish(
                    run_id=run_id, ips=selectors.run_hosts_unfingerprinted(run_id=run_id)
                )
    run = ScanRun.objects.get(pk=run_id)
    if run.state != RunState.FINGERPRINTING:
        return
    pending = PortObservation.objects.filter(run_id=run_id, fingerprinted=False)
    if not run.fingerprint or not pending.exists():
        run_complete(run_id=run_id)


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
