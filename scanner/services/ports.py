"""Port state that follows from judging a run (the alerts diff calls these): misses, closing.

Sightings themselves are recorded by results.ports_update_from_run; these are the changes
only a verdict on the run can make (a degraded run proves what it saw, misses nothing).
"""

from datetime import datetime

from django.db.models import Exists, F, OuterRef

from scanner.models import CoverageSpan, Network, Port, PortObservation, PortState
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


def coverage_record(
    *, run_id: int, at: datetime, spans: list[tuple[int, str, str]], first_network_ids: list[int]
) -> None:
    """Record what a healthy run covered: one span (network, address ranges, port ranges)
    per network it added coverage to; networks covered for the first time get their
    baseline time."""
    CoverageSpan.objects.bulk_create(
        [
            CoverageSpan(network_id=net_id, run_id=run_id, at=at, addresses=addrs, ports=ports)
            for net_id, addrs, ports in spans
        ],
        batch_size=BATCH_SIZE,
    )
    if first_network_ids:
        Network.objects.filter(id__in=first_network_ids, baselined_at__isnull=True).update(
            baselined_at=at
        )
