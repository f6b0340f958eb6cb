"""Current port state, advanced by the alerts diff in run order: sightings, misses, closing.

Recording (results.py) writes a run's observations only; its diff folds them into Port
(ports_advance) and then makes the changes only a verdict on the run can make (a degraded
run proves what it saw, misses nothing). Diffs run one at a time, in the order runs
finished, so Port is always the state as of the last run diffed.
"""

from datetime import datetime

from django.db.models import Exists, F, OuterRef, Value
from django.db.models.functions import Greatest, Least

from scanner.models import (
    CoverageSpan,
    Network,
    Port,
    PortObservation,
    PortState,
    ScanRun,
)
from scanner.services.results import BATCH_SIZE, FINGERPRINT_FIELDS

# Observations folded into the port state per pass; their hosts' ports are loaded alongside.
PORTS_ADVANCE_PAGE = 5000


def ports_advance(*, run: ScanRun, backfill: bool = False) -> None:
    """Fold a run's observations into the current state (its diff calls this, once).

    Observations are read in pages of PORTS_ADVANCE_PAGE: a 100,000-port run read at once
    held ~230 MB of rows and Port objects. Keys are unique per run, so pages are independent.
    A back-filled (older) run adds to the history (first seen, count, an older fingerprint
    never replaces a newer one) but does not reopen a port closed since.
    """
    seen_at = run.finished_at or run.created_at
    # Ports seen before: one set-based UPDATE (199 batches of ids took ~10 s at 200k
    # ports); it runs first, so that the rows the pages create are not counted twice.
    seen_here = PortObservation.objects.filter(
        run_id=run.pk, host_id=OuterRef("host_id"), proto=OuterRef("proto"), port=OuterRef("port")
    )
    Port.objects.filter(Exists(seen_here)).update(
        # Greatest/Least: a back-filled run of an older day keeps the order.
        first_seen=Least(F("first_seen"), Value(seen_at)),
        last_seen=Greatest(F("last_seen"), Value(seen_at)),
        seen_count=F("seen_count") + 1,
        **({} if backfill else {"state": PortState.OPEN}),
    )
    observations = PortObservation.objects.filter(run=run).order_by("id")
    last_id = 0
    while page := list(
        observations.filter(id__gt=last_id).values(
            "id", "host_id", "proto", "port", *FINGERPRINT_FIELDS
        )[:PORTS_ADVANCE_PAGE]
    ):
        last_id = page[-1]["id"]
        _ports_advance_page(observations=page, seen_at=seen_at)


def _ports_advance_page(*, observations: list[dict], seen_at: datetime) -> None:
    """Create the ports seen for the first time; take the fingerprints that changed."""
    keys = {(o["host_id"], o["proto"], o["port"]) for o in observations}
    host_ids = {k[0] for k in keys}
    # Plain rows, not model instances (at 200,000 ports that took the diff bench from
    # 18 s to 14.5 s).
    existing = {
        (h, proto, port): (pid, at, fp)
        for h, proto, port, pid, at, *fp in Port.objects.filter(host_id__in=host_ids).values_list(
            "host_id", "proto", "port", "id", "fingerprinted_at", *FINGERPRINT_FIELDS
        )
    }
    to_create, to_update = [], []
    for o in observations:
        key = (o["host_id"], o["proto"], o["port"])
        named = o["service"] or o["product"]
        fp = {name: o[name] for name in FINGERPRINT_FIELDS} if named else {}
        port = existing.get(key)
        if port is None:
            to_create.append(
                Port(
                    host_id=key[0],
                    proto=key[1],
                    port=key[2],
                    first_seen=seen_at,
                    last_seen=seen_at,
                    seen_count=1,
                    fingerprinted_at=seen_at if fp else None,
                    **fp,
                )
            )
        elif fp and (port[1] is None or port[1] <= seen_at):
            # Only rows whose fingerprint changed: rewriting every port is the slow part.
            if list(fp.values()) != port[2]:
                to_update.append(Port(id=port[0], fingerprinted_at=seen_at, **fp))
    Port.objects.bulk_create(to_create, batch_size=BATCH_SIZE, ignore_conflicts=True)
    if to_update:
        Port.objects.bulk_update(
            to_update, [*FINGERPRINT_FIELDS, "fingerprinted_at"], batch_size=BATCH_SIZE
        )


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
    *,
    run_id: int,
    at: datetime,
    spans: list[tuple[int, str, str, str]],
    first_network_ids: list[int],
) -> None:
    """Record what a healthy run covered: one span (network, address ranges, port ranges,
    proto) per network and protocol it added coverage to; networks covered for the first
    time get their baseline time."""
    CoverageSpan.objects.bulk_create(
        [
            CoverageSpan(
                network_id=net_id, run_id=run_id, at=at, addresses=addrs, ports=ports, proto=proto
            )
            for net_id, addrs, ports, proto in spans
        ],
        batch_size=BATCH_SIZE,
    )
    if first_network_ids:
        Network.objects.filter(id__in=first_network_ids, baselined_at__isnull=True).update(
            baselined_at=at
        )
