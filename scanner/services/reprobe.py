"""Re-probe ports seen open recently but missing from a run (TCP connects, UDP requests)."""

import ipaddress
import logging
from dataclasses import replace
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from scanner.findings import Finding
from scanner.models import Port, PortObservation, ScanRun
from scanner.services.probes import udp_probes
from scanner.services.results import observations_record
from scanner.services.scope import stored_targets_guard
from scanner.targets import TargetError, parse_ports, port_list

logger = logging.getLogger(__name__)


def ports_reprobe(*, run_id: int) -> list[Finding]:
    """Connect-check ports seen open recently but missing from this run; record those that answer.

    A single sweep under packet loss misses a few ports at random; a miss must not turn into
    a 'closed' now and a 'new' tomorrow.
    """
    from scanner.engines import connect, udp

    run = ScanRun.objects.get(pk=run_id)
    since = timezone.now() - timedelta(days=settings.PORTMON_REPROBE_DAYS)
    try:
        guarded = stored_targets_guard(run.targets)
    except TargetError as exc:
        logger.warning("run %s: re-probe skipped: %s", run_id, exc)
        return []
    wanted = {
        proto: set(port_list(parse_ports(text))) if text.strip() else set()
        for proto, text in (("tcp", run.ports), ("udp", run.udp_ports))
    }
    seen = set(
        PortObservation.objects.filter(run_id=run_id).values_list("host__ip", "proto", "port")
    )
    # A host that answered on all ports (a SYN proxy) has no port of its own to miss.
    everything_open = set(run.host_findings.values_list("host__ip", flat=True))
    candidates = []
    recent = Port.objects.filter(last_seen__gte=since, proto__in=["tcp", "udp"]).values_list(
        "host__ip", "proto", "port"
    )
    for ip, proto, port in recent.iterator(chunk_size=5000):
        if port not in wanted[proto] or (ip, proto, port) in seen:
            continue
        if proto == "tcp" and ip in everything_open:
            continue
        address = ipaddress.ip_address(ip)
        if any(address in net for net in guarded.networks if net.version == address.version):
            if not any(address in ex for ex in guarded.exclusions if ex.version == address.version):
                candidates.append(Finding(ip=ip, port=port, proto=proto))
    if not candidates:
        return []
    tcp_probes = replace(connect.VERIFY_PROBES, timeout=2.0)
    found = connect.verify([c for c in candidates if c.proto == "tcp"], tcp_probes)
    udp_candidates = [c for c in candidates if c.proto == "udp"]
    if udp_candidates:
        # A reply to our request, as in the sweep: silence is not open.
        found += [
            Finding(ip=r.ip, port=r.port, proto="udp")
            for r in udp.verify(udp_candidates, udp_probes())
            if r.state == udp.OPEN
        ]
    observations_record(run_id=run_id, findings=found, seen_at=timezone.now())
    logger.info(
        "run %s: re-probed %d missing port(s), %d answered", run_id, len(candidates), len(found)
    )
    return found
