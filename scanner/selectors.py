"""Reads of the scanner's state for the CLI, the reaper and the dashboard."""

from scanner.models import (
    CoverageSpan,
    HostFinding,
    PortObservation,
    ScanRun,
    ScanShard,
    ShardState,
)
from scanner.services.liveness import stale_before


def run_hosts_unfingerprinted(*, run_id: int) -> list[str]:
    """Hosts with ports this run found open and has not fingerprinted yet."""
    answering_all = run_hosts_answering_all(run_id=run_id)
    return sorted(
        set(
            PortObservation.objects.filter(run_id=run_id, fingerprinted=False)
            .exclude(host_id__in=list(answering_all))
            .values_list("host__ip", flat=True)
        )
    )


def run_hosts_answering_all(*, run_id: int) -> dict[int, HostFinding]:
    """{host_id: finding} of the hosts that answered on all ports in this run."""
    return {
        f.host_id: f
        for f in HostFinding.objects.filter(
            run_id=run_id, kind=HostFinding.Kind.ANSWERS_ALL_PORTS
        ).select_related("host", "host__network")
    }


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
        # Ports in a live fingerprint task's hands (its heartbeat writes them every 2 s).
        "in_nmap": PortObservation.objects.filter(
            run_id=run_id, fingerprinted=False, fingerprint_claimed_at__gte=stale_before()
        ).count(),
        # Ports nmap has named (a port that timed out is fingerprinted but unnamed).
        "named": PortObservation.objects.filter(run_id=run_id)
        .exclude(service="", product="")
        .count(),
        "error": run.error,
    }


def coverage_spans(*, network_ids, before) -> dict[int, list[tuple]]:
    """{network_id: [(at, address ranges, port ranges, proto)]} of spans recorded before
    `before`."""
    spans: dict[int, list[tuple]] = {}
    rows = CoverageSpan.objects.filter(network_id__in=sorted(network_ids), at__lt=before)
    fields = ("network_id", "at", "addresses", "ports", "proto")
    for net_id, at, addresses, ports, proto in rows.values_list(*fields):
        spans.setdefault(net_id, []).append((at, addresses, ports, proto))
    return spans
