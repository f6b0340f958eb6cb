"""Writes of the run diff (alerts.services.diff) besides its events: misses counted and
ports closed, the coverage a healthy run leaves behind, the host-level candidate of a host
that answers on every port."""

from collections import Counter
from datetime import datetime

from django.db.models import Exists

from alerts import diff
from alerts.kinds import EventKind
from alerts.services.diff_history import FP_FIELDS, HostRow, same_port_of_run
from alerts.services.events import Candidate, chunks
from scanner import synproxy
from scanner.models import Network, Port, PortObservation, PortState, ScanRun
from scanner.services.ports import coverage_record, ports_misses_record


def answering_all_candidate(finding, *, zone: str) -> Candidate:
    zone = (finding.host.network.zone if finding.host.network else "") or zone
    detail = {
        "zone": zone,
        "open_count": finding.open_count,
        "probed": finding.probed,
        "summary": synproxy.summary(open_count=finding.open_count, probed=finding.probed),
    }
    # Port 0: the event is about the host; one open event per host (open_key).
    return Candidate(
        finding.host_id, finding.host.ip, zone, "tcp", 0, EventKind.HOST_ANSWERS_ALL, detail
    )


def misses_record(
    *,
    run: ScanRun,
    coverage: diff.Coverage,
    hosts: dict[int, HostRow],
    closed_after: int,
) -> tuple[list[Candidate], int, int]:
    """Count a miss for each open port the run covered and did not see; close at N.
    Returns the "closed" candidates, the ports missed and those closed."""
    unseen: list[tuple] = []
    covered_ids = sorted(hid for hid, info in hosts.items() if info.covered)
    seen_here = Exists(same_port_of_run(PortObservation, run.pk))
    for chunk in chunks(covered_ids):
        unseen.extend(
            Port.objects.filter(host_id__in=chunk, state=PortState.OPEN)
            .exclude(seen_here)
            .values_list("id", "host_id", "proto", "port", "missed_runs", *FP_FIELDS)
        )
    bump: list[int] = []
    close: list[int] = []
    candidates = []
    for pid, hid, proto, port, missed, service, product, version in unseen:
        if not coverage.covers_port(port, proto):
            continue
        _, closes = diff.miss_outcome(missed_before=missed, closed_after=closed_after)
        (close if closes else bump).append(pid)
        if closes:
            ip, zone = hosts[hid].ip, hosts[hid].zone or run.zone
            fp = diff.Fingerprint(service, product, version)
            detail = {"zone": zone, "missed_runs": missed + 1, "old": fp.as_dict()}
            candidates.append(Candidate(hid, ip, zone, proto, port, EventKind.CLOSED, detail))
    ports_misses_record(bump_ids=bump, close_ids=close)
    return candidates, len(bump) + len(close), len(close)


def baseline_record(
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
