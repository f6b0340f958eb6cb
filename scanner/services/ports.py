"""Port state that follows from judging a run (the alerts diff calls these): misses, closing.

Sightings themselves are recorded by results.ports_update_from_run; these are the changes
only a verdict on the run can make (a degraded run proves what it saw, misses nothing).
"""

from datetime import datetime

from django.db.models import Exists, F, OuterRef

from scanner.models import Host, Network, Port, PortObservation, PortState
from scanner.services.results import BATCH_SIZE


def ports_seen_reset(*, run_id: int) -> int:
    """Ports the run saw start their count of consecutive misses again; returns how many."""
    seen_here = PortObservation.objects.filter(
        run_id=run_id, host_id=OuterRef("host_id"), proto=OuterRef("proto"), port=OuterRef("port")
    )
    return Port.objects.filter(missed_runs__gt=0).filter(Exists(seen_here)).update(missed_runs=0)


def ports_misses_record(*, bump_ids: list[int], close_ids: list[int]) -> None:
    """One more miss for each port; those in `close_ids` are closed as well."""
    for start in range(0, len(bump_ids), BATCH_SIZE):
        Port.objects.filter(id__in=bump_ids[start : start + BATCH_SIZE]).update(
            missed_runs=F("missed_runs") + 1
        )
    for start in range(0, len(close_ids), BATCH_SIZE):
        Port.objects.filter(id__in=close_ids[start : start + BATCH_SIZE]).update(
            missed_runs=F("missed_runs") + 1, state=PortState.CLOSED
        )


def coverage_baseline_record(
    *,
    grow: dict[tuple[str, str, str, datetime | None], list[int]],
    network_ids: list[int],
    at: datetime,
) -> None:
    """Record what a healthy run covered: hosts' covered ports, networks' first baseline.

    grow: {(old covered_ports, new covered_ports, learning_ports, learning_until): host
    ids}, hosts grouped so that a run over a /16 writes a few UPDATEs, not one per host; a
    host whose covered ports changed meanwhile (a concurrent diff) keeps them: the next run
    widens them again.
    """
    for (old, new, learning, until), host_ids in grow.items():
        for start in range(0, len(host_ids), BATCH_SIZE):
            Host.objects.filter(
                id__in=host_ids[start : start + BATCH_SIZE], covered_ports=old
            ).update(covered_ports=new, learning_ports=learning, learning_until=until)
    if network_ids:
        Network.objects.filter(id__in=network_ids, baselined_at__isnull=True).update(
            baselined_at=at
        )
