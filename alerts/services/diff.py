"""Apply the diff to one finished run: scan health, missed/closed ports, alert events.

Reads are a handful of bulk queries (the per-port history is computed by correlated
subqueries on PortObservation's (host, proto, port, seen_at) index); what the run means
goes out as candidates through the public event path (alerts.services.events) and as port
state changes through the scanner's service: set-based writes, no per-port round trips.
"""

import ipaddress
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import OperationalError, transaction
from django.db.models import Exists, OuterRef, Q, Subquery, Value
from django.db.models.functions import Concat
from django.utils import timezone

from alerts import diff
from alerts.models import AlertEvent, EventKind, HighRiskPort
from alerts.rules import RuleBook
from alerts.selectors import rule_specs_load
from alerts.services.events import Candidate, chunks, events_raise, events_reopen_seen
from alerts.signals import run_diffed
from scanner import synproxy
from scanner.models import Host, Network, Port, PortObservation, PortState, RunState, ScanRun
from scanner.selectors import coverage_spans, run_hosts_answering_all
from scanner.services.ports import (
    coverage_record,
    ports_advance,
    ports_misses_record,
    ports_seen_reset,
)
from scanner.services.results import state_turn_take

log = logging.getLogger(__name__)

# Healthy runs of the same policy that form the baseline of the health check.
BASELINE_RUNS = 7
# Separator for the previous fingerprint packed into one subquery column.
SEP = "\x1f"
FP_FIELDS = ("service", "product", "version")


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


def _peers(run: ScanRun):
    """Runs comparable with this one: same policy; without a policy, same source and zone."""
    qs = ScanRun.objects.filter(state=RunState.FINISHED).exclude(pk=run.pk)
    if run.policy_id:
        return qs.filter(policy_id=run.policy_id)
    return qs.filter(policy__isnull=True, source=run.source, zone=run.zone)


def run_health_assess(*, run: ScanRun, at: datetime) -> bool:
    """Is this run degraded compared with the median of its peers' last healthy runs?"""
    baseline = list(
        _peers(run)
        .filter(degraded=False, diffed_at__isnull=False, finished_at__lt=at)
        .order_by("-finished_at")
        .values_list("hosts_found", "ports_found")[:BASELINE_RUNS]
    )
    return diff.is_degraded(
        hosts_found=run.hosts_found,
        ports_found=run.ports_found,
        baseline=baseline,
        ratio=settings.PORTMON_DEGRADED_RATIO,
    )


@dataclass(frozen=True)
class HostRow:
    ip: str
    zone: str
    window_days: int | None
    covered: bool
    network_id: int | None
    network: str
    # The network's baseline is per host (a host outside every network has no other).
    per_host: bool


UNKNOWN_HOST = HostRow("", "", None, False, None, "", True)

HOST_FIELDS = (
    "id",
    "ip",
    "network__zone",
    "network__new_port_window_days",
    "network_id",
    "network__cidr",
    "network__baseline_scope",
)


def _host_row(row: tuple, *, covered: bool) -> tuple[int, HostRow]:
    hid, ip, zone, days, net_id, cidr, scope = row
    per_host = net_id is None or scope == Network.BaselineScope.HOST
    return hid, HostRow(ip, zone or "", days, covered, net_id, cidr or "", per_host)


def _host_info(host_ids: Iterable[int]) -> dict[int, HostRow]:
    """{host_id: HostRow} of hosts the run saw but did not cover."""
    info = {}
    for chunk in chunks(sorted(set(host_ids))):
        for row in Host.objects.filter(id__in=chunk).values_list(*HOST_FIELDS):
            hid, host = _host_row(row, covered=False)
            info[hid] = host
    return info


def _covered_hosts(coverage: diff.Coverage) -> dict[int, HostRow]:
    """Hosts inside the run's targets, as _host_info does."""
    if coverage.only_addresses:
        rows = []
        ips = sorted(str(a) for a in coverage.addresses)
        for chunk in chunks(ips):
            rows.extend(Host.objects.filter(ip__in=chunk).values_list(*HOST_FIELDS))
    else:
        # CIDR targets: membership is tested in Python (IPs are stored as text).
        rows = [r for r in Host.objects.values_list(*HOST_FIELDS) if coverage.covers_ip(r[1])]
    for chunk in chunks(sorted(coverage.names)):
        rows.extend(Host.objects.filter(hostname__in=chunk).values_list(*HOST_FIELDS))
    return dict(_host_row(row, covered=True) for row in rows)


def _same_key(model, run_id: int):
    return model.objects.filter(
        run_id=run_id, host_id=OuterRef("host_id"), proto=OuterRef("proto"), port=OuterRef("port")
    )


def _sightings(run: ScanRun, at: datetime) -> list[tuple]:
    """This run's observations with the port's history, one query."""
    prior = PortObservation.objects.filter(
        host_id=OuterRef("host_id"),
        proto=OuterRef("proto"),
        port=OuterRef("port"),
        seen_at__lte=at,
    ).exclude(run_id=run.pk)
    prev_fp = (
        prior.filter(fingerprinted=True)
        .order_by("-seen_at")
        .annotate(fp=Concat("service", Value(SEP), "product", Value(SEP), "version"))
        .values("fp")[:1]
    )
    return list(
        PortObservation.objects.filter(run_id=run.pk)
        .annotate(
            prev_seen=Subquery(prior.order_by("-seen_at").values("seen_at")[:1]),
            prev_fp=Subquery(prev_fp),
        )
        .values_list(
            "host_id",
            "proto",
            "port",
            "fingerprinted",
            "service",
            "product",
            "version",
            "prev_seen",
            "prev_fp",
        )
    )


def _missed_before(run: ScanRun) -> dict[tuple, int]:
    """Ports this run saw that healthy runs had missed: {(host, proto, port): missed_runs}.

    A separate small query: most seen ports have 0, and a correlated lookup per seen
    port would cost a quarter of the history query.
    """
    rows = (
        Port.objects.filter(missed_runs__gt=0)
        .filter(Exists(_same_key(PortObservation, run.pk)))
        .values_list("host_id", "proto", "port", "missed_runs")
    )
    return {(h, proto, port): missed for h, proto, port, missed in rows}


def _run_spans(run: ScanRun, coverage: diff.Coverage, at: datetime) -> dict[int, list[diff.Span]]:
    """{network_id: what this run covered there, a span per protocol}; none without ports."""
    protos = [
        (proto, diff.port_ranges_union(coverage.ranges_of(proto))) for proto in ("tcp", "udp")
    ]
    protos = [(proto, ports) for proto, ports in protos if ports]
    if not protos:
        return {}
    named = []
    for chunk in chunks(sorted(coverage.names)):
        named.extend(Host.objects.filter(hostname__in=chunk).values_list("ip", flat=True))
    spans = {}
    for net_id, cidr in Network.objects.values_list("id", "cidr"):
        addresses = diff.address_ranges(coverage, ipaddress.ip_network(cidr), named)
        if addresses:
            spans[net_id] = [diff.Span(at, addresses, ports, proto) for proto, ports in protos]
    return spans


def _spans_before(network_ids: Iterable[int], at: datetime) -> dict[int, list[diff.Span]]:
    """Each network's coverage by healthy runs before `at`: history as of this run."""
    return {
        net_id: [
            diff.Span(t, diff.ranges_parse(a), diff.ranges_parse(p), proto)
            for t, a, p, proto in rows
        ]
        for net_id, rows in coverage_spans(network_ids=network_ids, before=at).items()
    }


def _answered_before(host_ids: Iterable[int], run: ScanRun, at: datetime) -> set[int]:
    """Hosts with an observation by another run at or before `at`."""
    answered = set()
    for chunk in chunks(sorted(set(host_ids))):
        answered.update(
            PortObservation.objects.filter(host_id__in=chunk, seen_at__lte=at)
            .exclude(run_id=run.pk)
            .values_list("host_id", flat=True)
            .distinct()
        )
    return answered


def _closed_after_last_sighting(keys: dict[tuple, datetime | None]) -> set[tuple]:
    """Keys with a "closed" event raised (by a run) after the port's last sighting."""
    if not keys:
        return set()
    closed = set()
    host_ids = sorted({k[0] for k in keys})
    for chunk in chunks(host_ids):
        rows = AlertEvent.objects.filter(kind=EventKind.CLOSED, host_id__in=chunk).values_list(
            "host_id", "proto", "port", "run__finished_at"
        )
        for hid, proto, port, closed_at in rows:
            key = (hid, proto, port)
            if key in keys:
                last = keys[key]
                if last is None or (closed_at is not None and closed_at > last):
                    closed.add(key)
    return closed


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
    if _peers(run).filter(diffed_at__isnull=False, finished_at__gt=at).exists():
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
    run_spans = _run_spans(run, coverage, at)

    # Hosts that answered on all ports: their ports are unknown in this run (no new, no
    # miss, no baseline), one host-level candidate each instead.
    answering_all = run_hosts_answering_all(run_id=run.pk)
    sightings = [r for r in _sightings(run, at) if r[0] not in answering_all]
    missed_before = _missed_before(run)
    result.seen = len(sightings)
    seen_hosts = {row[0] for row in sightings}
    covered = _covered_hosts(coverage)
    covered = {hid: row for hid, row in covered.items() if hid not in answering_all}
    hosts = {**_host_info(seen_hosts - covered.keys()), **covered}

    # Candidates for "was closed": seen again after healthy runs missed them.
    maybe_closed = {
        (r[0], r[1], r[2]): r[7] for r in sightings if (r[0], r[1], r[2]) in missed_before
    }
    closed_keys = _closed_after_last_sighting(maybe_closed)

    # Baseline: never seen, and its address and port never covered by an earlier healthy
    # run (or still learnt); per-host networks: its host never answered before.
    first_seen = [(r[0], r[2]) for r in sightings if r[7] is None]  # (host, port)
    spans = _spans_before(
        set(run_spans) | {hosts[h].network_id for h, _ in first_seen if h in hosts} - {None}, at
    )
    answered_before = _answered_before(
        (h for h, _ in first_seen if (hosts.get(h) or UNKNOWN_HOST).per_host), run, at
    )

    candidates: list[Candidate] = [
        _answering_all_candidate(finding, zone=run.zone) for finding in answering_all.values()
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
        is_baseline = prev_seen is None and _is_baseline(
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
            immediate = kind == diff.HIGH_RISK
            candidates.append(
                Candidate(hid, ip, zone, proto, port, kind, detail, immediate=immediate)
            )
        if not kinds and s.newly_open:
            # Quiet (e.g. back within the N-day window): an event only if blacklisted.
            detail = {"zone": zone, "high_risk": s.high_risk, "reason": "deny rule"}
            if new_fp:
                detail["new"] = new_fp
            candidates.append(
                Candidate(hid, ip, zone, proto, port, diff.BLACKLISTED, detail, only_if_denied=True)
            )

    # Seeing a port proves it open, even in a degraded run.
    ports_seen_reset(run_id=run.pk)

    if not result.degraded:
        candidates.extend(
            _misses_record(
                run=run, coverage=coverage, hosts=hosts, closed_after=closed_after, result=result
            )
        )
        # Only a healthy run is a baseline: a degraded one saw too little to stand for
        # "normal", so the next healthy run covering the same hosts still is one.
        result.baseline = _baseline_record(
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


def _answering_all_candidate(finding, *, zone: str) -> Candidate:
    zone = (finding.host.network.zone if finding.host.network else "") or zone
    detail = {
        "zone": zone,
        "open_count": finding.open_count,
        "probed": finding.probed,
        "summary": synproxy.summary(open_count=finding.open_count, probed=finding.probed),
    }
    # Port 0: the event is about the host; one open event per host (open_key).
    return Candidate(
        finding.host_id, finding.host.ip, zone, "tcp", 0, diff.HOST_ANSWERS_ALL, detail
    )


def _misses_record(
    *,
    run: ScanRun,
    coverage: diff.Coverage,
    hosts: dict[int, tuple],
    closed_after: int,
    result: DiffResult,
) -> list[Candidate]:
    """Count a miss for each open port the run covered and did not see; close at N."""
    unseen = []
    covered_ids = sorted(hid for hid, info in hosts.items() if info.covered)
    seen_here = Exists(_same_key(PortObservation, run.pk))
    for chunk in chunks(covered_ids):
        unseen.extend(
            Port.objects.filter(host_id__in=chunk, state=PortState.OPEN)
            .exclude(seen_here)
            .values_list("id", "host_id", "proto", "port", "missed_runs", *FP_FIELDS)
        )
    bump, close, candidates = [], [], []
    for pid, hid, proto, port, missed, service, product, version in unseen:
        if not coverage.covers_port(port, proto):
            continue
        _, closes = diff.miss_outcome(missed_before=missed, closed_after=closed_after)
        (close if closes else bump).append(pid)
        if closes:
            ip, zone = hosts[hid].ip, hosts[hid].zone or run.zone
            fp = diff.Fingerprint(service, product, version)
            detail = {"zone": zone, "missed_runs": missed + 1, "old": fp.as_dict()}
            candidates.append(Candidate(hid, ip, zone, proto, port, diff.CLOSED, detail))
    ports_misses_record(bump_ids=bump, close_ids=close)
    result.missed = len(bump) + len(close)
    result.closed = len(close)
    return candidates


def _is_baseline(
    host: HostRow,
    port: int,
    proto: str,
    *,
    at: datetime,
    window: timedelta,
    spans: dict[int, list[diff.Span]],
    answered_before: bool,
) -> bool:
    host_first = host.per_host and not answered_before
    if host.network_id is None or not host.ip:
        # Outside every network there is no coverage to remember: a host's first answer.
        return host_first
    first = diff.first_covered(
        spans.get(host.network_id, ()), int(ipaddress.ip_address(host.ip)), port, proto
    )
    return diff.is_baseline(first_covered=first, at=at, window=window, host_first=host_first)


def _baseline_record(
    *,
    run: ScanRun,
    run_spans: dict[int, list[diff.Span]],
    spans: dict[int, list[diff.Span]],
    hosts: dict[int, HostRow],
    at: datetime,
    baseline: dict[int, Counter],
) -> list[dict]:
    """Remember what this healthy run covered; returns its baseline lines for the digest.

    Each network the run covered gets a span, unless an earlier one already holds it; a
    network with no earlier span has its baseline from now on. Lines: one per network
    with ports recorded quietly, or covered for the first time.
    """
    new_spans = [
        (
            net_id,
            diff.port_ranges_text(span.addresses),
            diff.port_ranges_text(span.ports),
            span.proto,
        )
        for net_id, net_spans in sorted(run_spans.items())
        for span in net_spans
        if not diff.span_redundant(spans.get(net_id, ()), span)
    ]
    networks_first = sorted(net_id for net_id in run_spans if not spans.get(net_id))
    coverage_record(run_id=run.pk, at=at, spans=new_spans, first_network_ids=networks_first)
    names = dict(
        Network.objects.filter(id__in=[*baseline, *networks_first]).values_list("id", "cidr")
    )
    lines = []
    for net_id in sorted(set(baseline) | set(networks_first)):
        counts = baseline.get(net_id, Counter())
        lines.append(
            {
                "network_id": net_id or None,
                "network": names.get(net_id, "") or "no network",
                "ports": sum(counts.values()),
                "hosts": len(counts),
            }
        )
    if lines:
        ScanRun.objects.filter(pk=run.pk).update(baseline=lines)
    return lines
