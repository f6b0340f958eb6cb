"""This node's knobs for the built-in probers (PORTMON_CONNECT_*, PORTMON_UDP_*)."""

from django.conf import settings

from scanner.engines.options import ProbeOptions


def connect_probes() -> ProbeOptions:
    """The connect scanner's knobs on this node (PORTMON_CONNECT_*)."""
    return ProbeOptions(
        timeout=settings.PORTMON_CONNECT_TIMEOUT_MS / 1000,
        retries=1,
        concurrency=settings.PORTMON_CONNECT_CONCURRENCY,
    )


def udp_probes() -> ProbeOptions:
    """The UDP prober's knobs on this node (PORTMON_UDP_*)."""
    return ProbeOptions(
        timeout=settings.PORTMON_UDP_TIMEOUT_MS / 1000,
        retries=settings.PORTMON_UDP_RETRIES,
        concurrency=settings.PORTMON_UDP_CONCURRENCY,
    )
