"""Which checks run where: chained from new events, and the first checks of every
internal exposure a run found (cover)."""

from django.conf import settings

from alerts.models import AlertEvent
from poc.checks import checks_load
from poc.models import PocCheck, PocReason
from poc.services.queue import PocTarget, pocs_queue


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
