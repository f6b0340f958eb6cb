"""Scan engines: masscan sweep, built-in connect scanner and UDP prober, nmap fingerprints.

The sweep engines share one interface (options.SweepEngine): a module with
`sweep(options: SweepOptions, events: SweepEvents) -> list[Finding]`; sweep_engine() picks
one by name and protocol. nmap, which names services on ports already found, takes a
FingerprintOptions instead. Each adapter takes validated values only (ipaddress objects,
(lo, hi) port pairs, numbers), builds its command line as a list, runs it without a shell
under a timeout, and leaves no process behind. See base.run_process.
"""

import ipaddress
from collections.abc import Iterable

from . import connect, masscan, udp
from .base import EngineError, EngineTimeout, Progress, check_targets
from .options import (
    MasscanOptions,
    ProbeOptions,
    SweepEngine,
    SweepEvents,
    SweepOptions,
)

ENGINES = ("auto", "masscan", "connect")

__all__ = [
    "ENGINES",
    "EngineError",
    "EngineTimeout",
    "MasscanOptions",
    "ProbeOptions",
    "Progress",
    "SweepEngine",
    "SweepEvents",
    "SweepOptions",
    "choose",
    "sweep_engine",
]


def sweep_engine(engine: str, proto: str) -> SweepEngine:
    """The module that sweeps for a resolved engine name (choose()) and a protocol:
    masscan for both protocols, else the connect scanner (TCP) or the UDP prober (UDP)."""
    if engine == "masscan":
        return masscan
    if engine != "connect":
        raise EngineError(f"unknown engine {engine!r}; resolve it with choose() first")
    return udp if proto == "udp" else connect


def choose(engine: str, targets: Iterable[object]) -> str:
    """Resolve "auto" to "masscan" when masscan can scan every target, else "connect".

    masscan needs raw sockets (CAP_NET_RAW, see privileges.py), cannot scan loopback (it
    sends frames on a real interface) and is used for IPv4 only. An explicit "masscan" that
    cannot work is an error here, with the reason, rather than a failed shard later.
    """
    if engine not in ENGINES:
        raise EngineError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    checked = check_targets(targets)
    unsuitable = [t for t in checked if t.version != 4 or _touches_loopback(t)]
    if engine == "connect":
        return "connect"
    if engine == "masscan":
        if unsuitable:
            raise EngineError(
                f"masscan cannot scan {unsuitable[0]} (loopback or IPv6); use --engine connect"
            )
        reason = masscan.unavailable_reason()
        if reason is not None:
            raise EngineError(reason)
        return "masscan"
    return "masscan" if not unsuitable and masscan.available() else "connect"


def _touches_loopback(target: object) -> bool:
    loopback = ipaddress.ip_network("127.0.0.0/8")
    if isinstance(target, ipaddress.IPv4Network):
        return target.overlaps(loopback)
    return isinstance(target, ipaddress.IPv4Address) and target in loopback
