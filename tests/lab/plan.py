"""Pure planning of a lab: which host offsets exist and which ports they open, from a seed."""

import ipaddress
import random

from tests.lab.services import SERVICES

# Random ports are drawn above this, so they never shadow a well-known port of another service
# and nmap's port-specific probes (which can match something else first) stay out of the way.
RANDOM_PORT_MIN = 1024
# The share of a host's ports placed on the service's well-known port (when still free).
WELL_KNOWN_SHARE = 0.5
WELL_KNOWN = {port for service in SERVICES.values() for port in service.well_known}


def plan_truth(
    *,
    network: ipaddress.IPv4Network,
    hosts: int,
    ports_per_host: tuple[int, int],
    seed: int,
    offsets: list[int] | None = None,
) -> dict[str, dict[int, str]]:
    """ip -> {port: service name}; the same seed gives the same offsets and ports.

    offsets, if given, are the hosts' offsets in network (hosts is then their number).
    """
    low, high = ports_per_host
    if not 0 <= low <= high <= 64:
        raise ValueError(f"ports_per_host must be 0 <= low <= high <= 64, got {ports_per_host}")
    allowed = range(1, network.num_addresses - 1)
    if offsets is not None:
        if not offsets or len(set(offsets)) != len(offsets) or not set(offsets) <= set(allowed):
            raise ValueError(f"offsets must be distinct numbers in 1-{allowed[-1]}: {offsets}")
        hosts = len(offsets)
    if not 1 <= hosts <= len(allowed):
        raise ValueError(f"hosts must be between 1 and {len(allowed)}, got {hosts}")
    rng = random.Random(seed)
    names = sorted(SERVICES)
    truth: dict[str, dict[int, str]] = {}
    chosen = offsets if offsets is not None else rng.sample(allowed, hosts)
    for offset in sorted(chosen):
        ports: dict[int, str] = {}
        for _ in range(rng.randint(low, high)):
            name = rng.choice(names)
            free = [p for p in SERVICES[name].well_known if p not in ports]
            if free and rng.random() < WELL_KNOWN_SHARE:
                port = rng.choice(free)
            else:
                port = rng.randint(RANDOM_PORT_MIN, 65535)
                while port in ports or port in WELL_KNOWN:
                    port = rng.randint(RANDOM_PORT_MIN, 65535)
            ports[port] = name
        truth[str(network.network_address + offset)] = dict(sorted(ports.items()))
    return truth
