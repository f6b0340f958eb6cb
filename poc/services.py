"""PoC stage: queue checks (chained from events, daily re-checks, manual runs), claim them
like fingerprint ports, run each in a child process, record the verdict, raise or fix the
finding through the public event path."""

import ipaddress
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from alerts.models import OPEN_STATES, AlertEvent, EventKind, EventState
from alerts.services.events import (
    Candidate,
    TransitionError,
    event_note_add,
    event_transition,
    events_raise,
)
from alerts.signals import events_raised
from poc import engine
from poc.checks import Verdict, checks_load
from poc.models import PocCheck, PocReason, PocResult, PocState, active_key_for
from scanner.models import Host
from scanner.services.liveness import Heartbeat, stale_before
from scanner.services.publish import task_by_name
from scanner.services.scope import scope_load

logger = logging.getLogger(__name__)

RUN_CHECK = "poc.run_check"
# Severities whose finding alerts at once (the rest wait for the digest).
IMMEDIATE_SEVERITIES = frozenset({"high", "critical"})


@dataclass(frozen=True)
class PocTarget:
    host_id: int
    proto: str
    port: int
    check: str
    event_id: int | None = None


# --- queue -----------------------------------------------------------------------------


def pocs_queue(*, targets: list[PocTarget], reason: str, at: datetime | None = None) -> list[int]:
    """Pending runs for these (port, check)s, queued on the poc queue once committed.

    A (port, check) already pending or running is skipped (its active key is taken); a
    chained one that ran within PORTMON_POC_DEDUPE_HOURS is skipped too. Returns new ids.
    """
    at = at or timezone.now()
    recent = at - timedelta(hours=settings.PORTMON_POC_DEDUPE_HOURS)
    created = []
    with transaction.atomic():
        for t in targets:
            key = active_key_for(t.host_id, t.proto, t.port, t.check)
            if reason == PocReason.CHAIN and PocCheck.objects.filter(
                host_id=t.host_id, proto=t.proto, port=t.port, check_name=t.check,
                state=PocState.DONE, finished_at__gte=recent,
            ).exists():  # fmt: skip
                continue
            try:
                with transaction.atomic():
                    row = PocCheck.objects.create(
                        host_id=t.host_id, proto=t.proto, port=t.port, check_name=t.check,
                        reason=reason, event_id=t.event_id, active_key=key, created_at=at,
                    )  # fmt: skip
            except IntegrityError:
                continue  # pending or running already: that run answers for this one too
            created.append(row.pk)
        pocs_publish(check_ids=created)
    return created


def pocs_publish(*, check_ids: list[int]) -> None:
    """Queue the runs on the poc queue once the caller's transaction commits."""

    def send() -> None:
        task = task_by_name(RUN_CHECK)
        for check_id in check_ids:
            try:
                task.apply_async(args=[check_id])
            except Exception as exc:  # broker down: the reaper queues it once it is back
                logger.error("PoC check %s not queued (%s); the reaper will", check_id, exc)
                continue
            PocCheck.objects.filter(pk=check_id).update(queued_at=timezone.now())

    if check_ids:
        transaction.on_commit(send)


class RecheckRefused(ValueError):
    """A re-check that cannot be queued (not a PoC finding, no check named)."""


def poc_recheck(*, event_id: int, author=None) -> int | None:
    """Queue a re-check of a PoC finding now (a triager's button, page or API), whatever its
    state: the verdict fixes, keeps or reopens it as the daily re-check would; the queued
    run is noted on the event (by `author`). Returns the run's id, or None when a run of
    that check on that port is queued or running already."""
    event = AlertEvent.objects.filter(pk=event_id, kind=EventKind.POC_FINDING).first()
    if event is None:
        raise RecheckRefused("only a PoC finding can be re-checked")
    check = event.detail.get("check") if isinstance(event.detail, dict) else None
    if check not in checks_load():
        raise RecheckRefused(f"this finding's check {check!r} is not installed")
    target = PocTarget(event.host_id, event.proto, event.port, check, event.pk)
    ids = pocs_queue(targets=[target], reason=PocReason.MANUAL)
    if not ids:
        return None
    event_note_add(event_id=event_id, author=author, text=f"PoC re-check {ids[0]} queued")
    return ids[0]


# --- chain -----------------------------------------------------------------------------


def pocs_chain(*, event_ids: list[int]) -> list[int]:
    """Queue the checks that apply to the ports of these events (kinds and zones as set)."""
    from poc.chain import ChainPolicy, EventFacts, chain_plan
    from scanner.models import Port

    policy = ChainPolicy(
        kinds=frozenset(settings.PORTMON_POC_CHAIN_KINDS),
        zones=frozenset(settings.PORTMON_POC_CHAIN_ZONES),
        include_suppressed=settings.PORTMON_POC_CHAIN_SUPPRESSED,
    )
    # An import is offline: its ports are probed only when it said so (scan_import --poc).
    events = list(
        AlertEvent.objects.filter(pk__in=event_ids, kind__in=policy.kinds)
        .exclude(run__probes_allowed=False)
        .select_related("host__network", "run")
    )
    if not events:
        return []
    services = dict(
        (((h, pr, p), s) for h, pr, p, s in Port.objects.filter(
            host_id__in={e.host_id for e in events}
        ).values_list("host_id", "proto", "port", "service"))
    )  # fmt: skip
    facts = [
        EventFacts(
            event_id=e.pk,
            host_id=e.host_id,
            proto=e.proto,
            port=e.port,
            kind=e.kind,
            zone=_zone(e),
            suppressed=e.suppressed,
            service=services.get((e.host_id, e.proto, e.port), ""),
        )  # fmt: skip
        for e in events
    ]
    planned = chain_plan(facts, policy=policy, checks=checks_load().values())
    targets = [PocTarget(p.host_id, p.proto, p.port, p.check, p.event_id) for p in planned]
    return pocs_queue(targets=targets, reason=PocReason.CHAIN)


def pocs_cover(*, run_id: int) -> list[int]:
    """Every internal exposure gets its checks once: the checks that apply to each open
    port this run found and that never ran on it, whatever the diff said of the port (a
    baseline or learning-window port raises no event, so chaining never sees it).

    Quiet: a positive verdict raises poc_finding as a chained one does, a negative one is
    recorded. Only runs that may probe (live scans; an import with --poc). A service that
    changes is checked again by chaining (service_changed). Returns the new run ids.
    """
    from scanner.models import PortObservation, ScanRun

    run = ScanRun.objects.filter(pk=run_id, probes_allowed=True).first()
    if run is None:
        return []
    zones = frozenset(settings.PORTMON_POC_CHAIN_ZONES)
    checks = list(checks_load().values())
    rows = PortObservation.objects.filter(run_id=run_id).values_list(
        "host_id", "proto", "port", "service", "host__network__zone"
    )
    wanted: dict[tuple, None] = {}
    for host_id, proto, port, service, zone in rows:
        if (zone or run.zone) not in zones:
            continue
        for check in checks:
            if check.applies(service=service, port=port, proto=proto):
                wanted[(host_id, proto, port, check.name)] = None
    # Ports with an event of this run that chaining handles (it names the event).
    events = AlertEvent.objects.filter(run_id=run_id, kind__in=settings.PORTMON_POC_CHAIN_KINDS)
    if not settings.PORTMON_POC_CHAIN_SUPPRESSED:
        events = events.filter(suppressed=False)
    chained = set(events.values_list("host_id", "proto", "port"))
    wanted = {key: None for key in wanted if key[:3] not in chained}
    host_ids = sorted({key[0] for key in wanted})
    done: set[tuple] = set()
    for start in range(0, len(host_ids), 900):
        done.update(
            PocCheck.objects.filter(host_id__in=host_ids[start : start + 900]).values_list(
                "host_id", "proto", "port", "check_name"
            )
        )
    targets = [
        PocTarget(h, proto, p, name)
        for h, proto, p, name in wanted
        if (h, proto, p, name) not in done
    ]
    return pocs_queue(targets=targets, reason=PocReason.COVER)


def _zone(event: AlertEvent) -> str:
    if isinstance(event.detail, dict) and event.detail.get("zone"):
        return str(event.detail["zone"])
    if event.host.network is not None:
        return event.host.network.zone
    return event.run.zone if event.run is not None else ""


# --- claim and run ---------------------------------------------------------------------


class ClaimHeartbeat(Heartbeat):
    """Keeps a run's claim alive while its check runs (a side thread), as fingerprints do."""

    def __init__(self, *, check_id: int, token: str):
        self.row = PocCheck.objects.filter(pk=check_id, claim=token, state=PocState.RUNNING)
        super().__init__(self._beat)

    def _beat(self) -> None:
        self.row.update(claimed_at=timezone.now())


def poc_claim(*, check_id: int, token: str) -> PocCheck | None:
    """Take a pending run, take back our own (a redelivered task), or take over one whose
    heartbeat stopped; None if another task holds it or it is finished."""
    now = timezone.now()
    claimed = PocCheck.objects.filter(
        Q(state=PocState.PENDING)
        | Q(state=PocState.RUNNING, claim=token)
        | Q(state=PocState.RUNNING, claimed_at__lt=stale_before()),
        pk=check_id,
    ).update(state=PocState.RUNNING, claim=token, claimed_at=now, attempts=F("attempts") + 1)
    if claimed != 1:
        return None
    return PocCheck.objects.select_related("host").get(pk=check_id)


def poc_finish(*, check_id: int, token: str, state: str, error: str = "") -> bool:
    """End a run we hold (failed or skipped); False if another task took it over."""
    return bool(
        PocCheck.objects.filter(pk=check_id, claim=token, state=PocState.RUNNING).update(
            state=state, active_key=None, finished_at=timezone.now(), error=error[:300]
        )
    )


def poc_run(*, check_id: int, token: str) -> PocResult | None:
    """Claim, check scope again, run the check, record the verdict. None: nothing recorded
    (held elsewhere, finished, out of scope, or no verdict)."""
    run = poc_claim(check_id=check_id, token=token[:32])
    if run is None:
        return None
    token = token[:32]
    if run.attempts > settings.PORTMON_POC_MAX_ATTEMPTS:
        poc_finish(check_id=check_id, token=token, state=PocState.FAILED,
                   error=f"gave up after {run.attempts - 1} attempts")  # fmt: skip
        return None
    # Scope may have changed since the event queued this: the worker decides, as for shards.
    if not scope_load().allows(ipaddress.ip_address(run.host.ip)):
        logger.warning("PoC %s: %s is no longer in scope; not run", check_id, run.host.ip)
        poc_finish(check_id=check_id, token=token, state=PocState.SKIPPED,
                   error="target is no longer in scope")  # fmt: skip
        return None
    with ClaimHeartbeat(check_id=check_id, token=token):
        outcome = engine.check_run(
            check=run.check_name, ip=run.host.ip, port=run.port,
            timeout=settings.PORTMON_POC_CHECK_TIMEOUT,
        )  # fmt: skip
    if outcome.verdict is None:
        # No verdict is not a negative one: an open finding stays open.
        poc_finish(check_id=check_id, token=token, state=PocState.FAILED, error=outcome.error)
        return None
    return poc_record(run=run, token=token, verdict=outcome.verdict)


def poc_abandon(*, check_id: int, token: str, reason: str) -> None:
    """A task killed by its hard limit: the check process died with it; no verdict."""
    PocCheck.objects.filter(pk=check_id, claim=token[:32], state=PocState.RUNNING).update(
        state=PocState.FAILED, active_key=None, finished_at=timezone.now(), error=reason[:300]
    )


# --- record and raise ------------------------------------------------------------------


def poc_record(
    *, run: PocCheck, token: str, verdict: Verdict, at: datetime | None = None
) -> PocResult | None:
    """Store the verdict and apply it to the finding: raise, reopen (positive) or fix
    (negative). Exactly once: the run must still be ours."""
    at = at or timezone.now()
    with transaction.atomic():
        done = PocCheck.objects.filter(pk=run.pk, claim=token, state=PocState.RUNNING).update(
            state=PocState.DONE, active_key=None, finished_at=at, error=""
        )
        if done != 1:
            return None  # another task took the run over; its verdict counts
        result = PocResult.objects.create(
            run=run, host_id=run.host_id, proto=run.proto, port=run.port, check_name=run.check_name,
            vulnerable=verdict.vulnerable, severity=verdict.severity, title=verdict.title,
            evidence=verdict.evidence, checked_at=at,
        )  # fmt: skip
        event_id = _finding_apply(result=result, host=run.host, at=at)
        if event_id:
            PocResult.objects.filter(pk=result.pk).update(event_id=event_id)
            result.event_id = event_id
    return result


def _finding_apply(*, result: PocResult, host: Host, at: datetime) -> int | None:
    findings = [
        e
        for e in AlertEvent.objects.filter(
            host_id=result.host_id,
            proto=result.proto,
            port=result.port,
            kind=EventKind.POC_FINDING,
        ).order_by("-created_at", "-id")  # fmt: skip
        if isinstance(e.detail, dict) and e.detail.get("check") == result.check_name
    ]
    latest = findings[0] if findings else None
    if not result.vulnerable:
        if latest is not None and latest.state in OPEN_STATES:
            event_transition(
                event_id=latest.pk, to_state=EventState.FIXED, at=at,
                note=f"PoC re-check negative ({result.check_name}): {result.evidence[:200]}",
            )  # fmt: skip
            return latest.pk
        return None
    if latest is not None and latest.state in (*OPEN_STATES, EventState.IGNORED):
        return latest.pk  # already open, or the team chose to ignore it
    if latest is not None and latest.state == EventState.FIXED:
        # Only a positive check reopens a finding (a scan seeing the port does not).
        try:
            event_transition(
                event_id=latest.pk, to_state=EventState.REOPENED, at=at,
                note=f"PoC check positive again ({result.check_name})",
            )  # fmt: skip
        except TransitionError as exc:
            logger.warning("PoC finding %s not reopened: %s", latest.pk, exc)
            return latest.pk
        ids = [latest.pk]
        transaction.on_commit(
            lambda: events_raised.send(sender=AlertEvent, event_ids=ids, run_id=None)
        )
        return latest.pk
    detail = {
        "check": result.check_name,
        "severity": result.severity,
        "title": result.title,
        "reason": result.severity,
        "evidence": result.evidence,
        "poc_result": result.pk,
        "zone": host.network.zone if host.network is not None else "",
    }
    raised = events_raise(
        candidates=[
            Candidate(
                host_id=result.host_id,
                ip=host.ip,
                zone=str(detail["zone"]),
                proto=result.proto,
                port=result.port,
                kind=EventKind.POC_FINDING,
                detail=detail,
                immediate=result.severity in IMMEDIATE_SEVERITIES,
                subkey=result.check_name,
            )  # fmt: skip
        ],
        at=at,
    )
    # One open finding per (port, check): the check's name is the event's subkey.
    return raised.event_ids[0] if raised.event_ids else None


# --- reaper and re-checks --------------------------------------------------------------


def pocs_reap(*, now: datetime | None = None) -> int:
    """Hand on runs whose task died (heartbeat stopped) or whose message was lost, and
    queue the daily re-check of open findings. Returns the runs queued."""
    now = now or timezone.now()
    dead = list(
        PocCheck.objects.filter(state=PocState.RUNNING, claimed_at__lt=stale_before())
        .values_list("pk", flat=True)
    )  # fmt: skip
    if dead:
        PocCheck.objects.filter(pk__in=dead, state=PocState.RUNNING).update(
            state=PocState.PENDING, claim=""
        )
    quiet_before = now - timedelta(seconds=settings.PORTMON_REQUEUE_AFTER)
    busy = PocCheck.objects.filter(state=PocState.RUNNING, claimed_at__gte=stale_before())
    lost = []
    if not busy.exists():
        lost = list(
            PocCheck.objects.filter(state=PocState.PENDING)
            .filter(Q(queued_at__isnull=True) | Q(queued_at__lt=quiet_before))
            .exclude(pk__in=dead)
            .values_list("pk", flat=True)
        )
    handed = dead + lost
    with transaction.atomic():
        pocs_publish(check_ids=handed)
    if handed:
        logger.warning("re-queued %d PoC check(s) whose task died or was lost", len(handed))
    return len(handed) + len(pocs_recheck_due(now=now))


def pocs_recheck_due(*, now: datetime | None = None) -> list[int]:
    """Queue a re-check of every open finding whose last result is older than
    PORTMON_POC_RECHECK_HOURS."""
    now = now or timezone.now()
    due_before = now - timedelta(hours=settings.PORTMON_POC_RECHECK_HOURS)
    targets = []
    for event in AlertEvent.objects.filter(kind=EventKind.POC_FINDING, state__in=OPEN_STATES):
        check = event.detail.get("check") if isinstance(event.detail, dict) else None
        if not check:
            continue
        last = (
            PocResult.objects.filter(
                host_id=event.host_id, proto=event.proto, port=event.port, check_name=check
            )
            .values_list("checked_at", flat=True)
            .first()
        )
        if last is None or last < due_before:
            targets.append(PocTarget(event.host_id, event.proto, event.port, check, event.pk))
    return pocs_queue(targets=targets, reason=PocReason.RECHECK, at=now) if targets else []
