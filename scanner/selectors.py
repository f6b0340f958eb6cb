"""Reads of the scanner's state for the CLI, the reaper and the dashboard."""

from scanner.models import PortObservation, ScanRun, ScanShard, ShardState


def run_hosts_unfingerprinted(*, run_id: int) -> list[str]:
    """Hosts with ports this run found open and has not fingerprinted yet."""
    return sorted(
        set(
            PortObservation.objects.filter(run_id=run_id, fingerprinted=False).values_list(
                "host__ip", flat=True
            )
        )
    )


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
