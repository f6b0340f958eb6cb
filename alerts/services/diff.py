"""Apply the diff to one finished run: scan health, missed/closed ports, alert events.

Reads are a handful of bulk queries (the per-port history is computed by correlated
subqueries on PortObservation's (host, proto, port, seen_at) index); what the run means
goes out as candidates through the public event path (alerts.services.events) and as port
state changes through the scanner's service: set-based writes, no per-port round trips.
"""

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import OperationalError, transaction
from django.db.models import Q
from django.utils import timezone

from alerts import diff
from alerts.kinds import EventKind
from alerts.models import HighRiskPort
from alerts.rules import RuleBook
from alerts.selectors import rule_specs_load
from alerts.services.diff_history import (
    SEP,
    UNKNOWN_HOST,
    closed_after_last_sighting,
    hosts_answered_before,
    hosts_covered,
    hosts_info,
    ports_missed_before,
    run_health_assess,
    run_peers,
    run_sightings,
    sighting_is_baseline,
    spans_before,
    spans_of_run,
)
from alerts.services.diff_record import answering_all_candidate, baseline_record, misses_record
from alerts.services.events import Candidate, events_raise, events_reopen_seen
from alerts.signals import run_diffed
from scanner.models import PortObservation, RunState, ScanRun
from scanner.selectors import run_hosts_answering_all
from scanner.services.ports import ports_advance, ports_seen_reset
from scanner.services.results import state_turn_take

log = logging.getLogger(__name__)


@dataclass
class DiffResult:
    run_id: int
    degraded: bool = False
    backfill: bool = False
    seen: int = 0
    missed: int = 0
    closed: int = 0
    reopened_events: int = 0
    created: Counter = field(default_factory=Counter)
    baseline: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return {**self.__dict__, "created": dict(self.created)}


def run_diff(*, run_id: int) -> DiffResult | None:
    """Diff a finished run, exactly once, after every run that finished before it.

    Diffs take turns (a lock on the StateTurn row, held until each commits) and each turn
    diffs the earliest finished run not diffed yet, up to this one: a run's verdict reads
    the port state as of the runs before it, never one that a later run's diff advanced,
    however the imports, workers and their tasks interleave. A run whose diff fails while
    a later run waits is marked (ScanRun.error) and passed, so one broken run cannot stop
    the alerts for good. Returns None when the run is not finished or was already diffed
    (by this worker's turn for a later run, or another's).
    """
    target = ScanRun.objects.filter(pk=run_id, state=RunState.FINISHED).first()
    if target is None or target.diffed_at is not None:
        return None
    key = target.finished_at or target.created_at
    while True:
        with transaction.atomic():
            # Waits here while another diff holds the turn; reads after it see its commit.
            state_turn_take()
            run = _next_undiffed(key, run_id)
            if run is None:
                return None  # diffed meanwhile by another worker's turn
            try:
                with transaction.atomic():
                    result = _run_claimed(run)
            except (OperationalError, SoftTimeLimitExceeded):
                # The database (a lock, a lost connection): the task retries. Out of time:
                # the runs diffed so far stay diffed; the next turn goes on from this one.
                raise
            except Exception as exc:
                if run.pk == run_id:
                    raise
                log.exception("diff of run %s failed; run %s goes on after it", run.pk, run_id)
                _run_failed(run, exc)
                continue
        log.info("diff of run %s: %s", run.pk, result.as_dict())
        if not result.backfill:
            # On commit: inside a caller's transaction (tests, diffs_pending_run's caller)
            # the run is not diffed for others until that commits.
            transaction.on_commit(partial(run_diffed.send, sender=ScanRun, run_id=run.pk))
        if run.pk == run_id:
            return result


def _next_undiffed(key: datetime, run_id: int) -> ScanRun | None:
    """The earliest finished run not diffed yet, if it finished no later than the target."""
    earlier = Q(finished_at__lt=key) | Q(finished_at=key, pk__lte=run_id)
    return (
        ScanRun.objects.filter(earlier, state=RunState.FINISHED, diffed_at__isnull=True)
        .order_by("finished_at", "pk")
        .first()
    )


def _run_claimed(run: ScanRun) -> DiffResult:
    ScanRun.objects.filter(pk=run.pk).update(diffed_at=timezone.now())
    state_turn_take(run_id=run.pk)
    return _run_diff(run=run)


def _run_failed(run: ScanRun, exc: Exception) -> None:
    error = f"diff failed: {type(exc).__name__}: {exc}"[:500]
    ScanRun.objects.filter(pk=run.pk).update(
        diffed_at=timezone.now(), error=(f"{run.error}; {error}" if run.error else error)
    )


def diffs_pending_run(*, older_than: timedelta = timedelta(minutes=10)) -> list[int]:
    """Diff finished runs that never were: their diff failed past its retries, or the
    process died inside it (the claim rolled back with it). Oldest first, so that each is
    diffed against the history before it; a run that fails again is logged and skipped
    (a newer run diffed meanwhile makes it a back-fill). Returns the runs diffed."""
    cutoff = timezone.now() - older_than
    pending = ScanRun.objects.filter(
        state=RunState.FINISHED, diffed_at__isnull=True, finished_at__lt=cutoff
    ).order_by("finished_at", "pk")
    diffed = []
    for run_id in pending.values_list("pk", flat=True):
        try:
            if run_diff(run_id=run_id) is not None:
                diffed.append(run_id)
        except Exception:
            log.exception("diff of run %s failed again", run_id)
    if diffed:
        log.warning("diffed %d run(s) whose diff had been lost: %s", len(diffed), diffed)
    return diffed


def _run_diff(*, run: ScanRun) -> DiffResult:
    at = run.finished_at or run.created_at
    result = DiffResult(run_id=run.pk)
    if run_peers(run).filter(diffed_at__isnull=False, finished_at__gt=at).exists():
        # A back-filled older run: its observations are history now, but counting misses
        # or raising events from it would rewrite the present from the past.
        result.backfill = True
        ports_advance(run=run, backfill=True)
        return result
    # Recording wrote observations only: the port state moves here, in run order.
    ports_advance(run=run)
    # A run already marked degraded (a shard failed, so part of its targets went unscanned)
    # stays degraded whatever its counts look like.
    result.degraded = run.degraded or run_health_assess(run=run, at=at)
    if result.degraded:
        ScanRun.objects.filter(pk=run.pk).update(degraded=True)

    default_days = settings.PORTMON_NEW_PORT_DAYS
    closed_after = settings.PORTMON_CLOSED_AFTER_RUNS
    high_risk = set(HighRiskPort.objects.values_list("proto", "port"))
    book = RuleBook(rule_specs_load(), at=at)
    coverage = diff.coverage_parse(run.targets, run.ports, run.udp_ports)
    run_spans = spans_of_run(run, coverage, at)

    # Hosts that answered on all ports: their ports are unknown in this run (no new, no
    # miss, no baseline), one host-level candidate each instead.
    answering_all = run_hosts_answering_all(run_id=run.pk)
    sightings = [r for r in run_sightings(run, at) if r[0] not in answering_all]
    missed_before = ports_missed_before(run)
    result.seen = len(sightings)
    seen_hosts = {row[0] for row in sightings}
    covered = hosts_covered(coverage)
    covered = {hid: row for hid, row in covered.items() if hid not in answering_all}
    hosts = {**hosts_info(seen_hosts - covered.keys()), **covered}

    # Candidates for "was closed": seen again after healthy runs missed them.
    maybe_closed = {
        (r[0], r[1], r[2]): r[7] for r in sightings if (r[0], r[1], r[2]) in missed_before
    }
    closed_keys = closed_after_last_sighting(maybe_closed)

    # Baseline: never seen, and its address and port never covered by an earlier healthy
    # run (or still learnt); per-host networks: its host never answered before.
    first_seen = [(r[0], r[2]) for r in sightings if r[7] is None]
    networks = {hosts[h].network_id for h, _ in first_seen if h in hosts}
    spans = spans_before(set(run_spans) | {n for n in networks if n is not None}, at)
    answered_before = hosts_answered_before(
        (h for h, _ in first_seen if (hosts.get(h) or UNKNOWN_HOST).per_host), run, at
    )

    candidates: list[Candidate] = [
        answering_all_candidate(finding, zone=run.zone) for finding in answering_all.values()
    ]
    baseline: dict[int, Counter] = {}  # {network_id or 0: Counter(host_id: ports)}
    for hid, proto, port, fped, service, product, version, prev_seen, prev_fp in sightings:
        missed = missed_before.get((hid, proto, port), 0) if missed_before else 0
        if (
            prev_seen is not None
            and not missed
            and (not fped or not prev_fp or prev_fp.startswith(f"{service}{SEP}{product}{SEP}"))
        ):
            # Seen before, not missed since, same service and product: nothing to say
            # (the common case; skipping it keeps the loop cheap at 200k ports).
            continue
        old_fp = diff.Fingerprint(*(prev_fp.split(SEP) + ["", ""])[:3]) if prev_fp else None
        host = hosts.get(hid) or UNKNOWN_HOST
        ip, zone, days = host.ip, host.zone or run.zone, host.window_days
        window = timedelta(days=days if days is not None else default_days)
        is_baseline = prev_seen is None and sighting_is_baseline(
            host,
            port,
            proto,
            at=at,
            window=window,
            spans=spans,
            answered_before=hid in answered_before,
        )
        if is_baseline:
            baseline.setdefault(host.network_id or 0, Counter())[hid] += 1
        s = diff.Sighting(
            high_risk=(proto, port) in high_risk,
            prev_seen=prev_seen,
            missed_before=missed,
            was_closed=(hid, proto, port) in closed_keys,
            old_fp=old_fp,
            new_fp=diff.Fingerprint(service, product, version) if fped else None,
            baseline=is_baseline,
        )
        kinds = diff.sighting_events(s, at=at, window=window)
        new_fp = s.new_fp.as_dict() if s.new_fp else None
        for kind, detail in kinds:
            detail = {**detail, "zone": zone, "high_risk": s.high_risk}
            if new_fp and "new" not in detail:
                detail["new"] = new_fp
            immediate = kind == EventKind.HIGH_RISK
            candidates.append(
                Candidate(hid, ip, zone, proto, port, kind, detail, immediate=immediate)
            )
        if not kinds and s.newly_open:
            # Quiet (e.g. back within the N-day window): an event only if blacklisted.
            detail = {"zone": zone, "high_risk": s.high_risk, "reason": "deny rule"}
            if new_fp:
                detail["new"] = new_fp
            candidates.append(
                Candidate(
                    hid, ip, zone, proto, port, EventKind.BLACKLISTED, detail, only_if_denied=True
                )
            )

    # Seeing a port proves it open, even in a degraded run.
    ports_seen_reset(run_id=run.pk)

    if not result.degraded:
        closing, result.missed, result.closed = misses_record(
            run=run, coverage=coverage, hosts=hosts, closed_after=closed_after
        )
        candidates.extend(closing)
        # Only a healthy run is a baseline: a degraded one saw too little to stand for
        # "normal", so the next healthy run covering the same hosts still is one.
        result.baseline = baseline_record(
            run=run, run_spans=run_spans, spans=spans, hosts=hosts, at=at, baseline=baseline
        )

    # Reopened first: a fixed event that comes back holds its key, and a candidate with
    # the same key then adds nothing.
    reopened = events_reopen_seen(
        seen=PortObservation.objects.filter(run_id=run.pk), at=at, run_id=run.pk
    )
    result.reopened_events = len(reopened)
    raised = events_raise(candidates=candidates, at=at, run_id=run.pk, book=book)
    result.created = Counter(raised.created)
    return result
