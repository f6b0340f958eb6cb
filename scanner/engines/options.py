"""What a sweep engine is asked to do, checked once: SweepOptions, and the engine interface.

Every sweep engine (masscan, connect, udp) is a module with

    sweep(options: SweepOptions, events: SweepEvents = NO_EVENTS) -> list[Finding]

Callers build one SweepOptions (targets, ports, protocol, exclusions, deadline, the probers'
and masscan's knobs) and pass it down whole; `replace(options, targets=...)` makes a variant
(a re-probe, a route's share), checked again on the way. Values that reach a command line
(masscan's) are checked here, by type: nothing a user typed gets there unparsed.
"""

import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from scanner.findings import Finding

from .base import (
    EngineError,
    IPTarget,
    PortRange,
    Progress,
    check_number,
    check_ports,
    check_targets,
)

if TYPE_CHECKING:
    from .routes import SweepPlan

Proto = Literal["tcp", "udp"]
Answers = Callable[[list[tuple[str, int]]], None]  # batches of (ip, port) that got an answer
Exclusion = ipaddress.IPv4Network | ipaddress.IPv6Network  # an address set, as networks

MASSCAN_MAX_RATE = 10_000_000  # masscan's own ceiling is far above what any NIC here sustains
_INTERFACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,14}")  # Linux IFNAMSIZ is 16
_MAC = re.compile(r"[0-9a-fA-F]{2}([-:])[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}")


@dataclass(frozen=True)
class ProbeOptions:
    """The built-in probers' knobs (connect scanner, UDP prober): how long one probe waits
    for an answer (seconds), how often a silent probe is sent again, probes in flight."""

    timeout: float
    retries: int
    concurrency: int

    def __post_init__(self) -> None:
        check_number("timeout", self.timeout, 0.01, 60)
        check_number("retries", self.retries, 0, 10, integer=True)
        check_number("concurrency", self.concurrency, 1, 20000, integer=True)


# Each prober's defaults (PORTMON_CONNECT_* and PORTMON_UDP_* default to the same values).
CONNECT_PROBES = ProbeOptions(timeout=1.0, retries=1, concurrency=2000)
UDP_PROBES = ProbeOptions(timeout=1.5, retries=2, concurrency=256)


@dataclass(frozen=True)
class MasscanOptions:
    """masscan's own knobs: packets per second, retries, seconds it waits for late answers,
    and overrides of the route's interface, source address and gateway MAC (PORTMON_MASSCAN_*,
    checked against the route by routes.plan)."""

    rate: int = 1000
    retries: int = 1
    wait: int = 3
    interface: str | None = None
    source_ip: str | None = None
    router_mac: str | None = None

    def __post_init__(self) -> None:
        check_number("rate", self.rate, 1, MASSCAN_MAX_RATE, integer=True)
        check_number("retries", self.retries, 0, 10, integer=True)
        check_number("wait", self.wait, 0, 300, integer=True)
        if self.interface is not None and not (
            isinstance(self.interface, str) and _INTERFACE.fullmatch(self.interface)
        ):
            raise EngineError(f"{self.interface!r} is not a network interface name")
        if self.source_ip is not None:
            object.__setattr__(self, "source_ip", str(check_source_ip(self.source_ip)))
        if self.router_mac is not None and not (
            isinstance(self.router_mac, str) and _MAC.fullmatch(self.router_mac)
        ):
            raise EngineError(f"{self.router_mac!r} is not a MAC address")


@dataclass(frozen=True)
class SweepOptions:
    """One sweep: every address of targets (minus exclude) on ports, by proto.

    deadline is a time.monotonic() value: past it the engine stops and raises EngineTimeout
    with what it found so far. probes: the connect scanner's or UDP prober's knobs (their
    defaults for proto when not given); masscan: masscan's. plan, if given, is routes.plan()
    of these very targets, made (and checked) by the caller.
    """

    targets: tuple[IPTarget, ...]
    ports: tuple[PortRange, ...]
    proto: Proto = "tcp"
    exclude: tuple[Exclusion, ...] = ()
    deadline: float | None = None
    probes: ProbeOptions | None = None
    masscan: MasscanOptions = field(default_factory=MasscanOptions)
    plan: "SweepPlan | None" = None

    def __post_init__(self) -> None:
        from .routes import SweepPlan

        object.__setattr__(self, "targets", tuple(check_targets(self.targets)))
        object.__setattr__(self, "ports", tuple(check_ports(self.ports)))
        if self.proto not in ("tcp", "udp"):
            raise EngineError(f"protocol must be tcp or udp, got {self.proto!r}")
        object.__setattr__(self, "exclude", tuple(check_exclusions(self.exclude)))
        if self.deadline is not None:
            check_number("deadline", self.deadline, 0, float("inf"))
        if self.probes is not None and not isinstance(self.probes, ProbeOptions):
            raise EngineError("probes must be a ProbeOptions")
        if not isinstance(self.masscan, MasscanOptions):
            raise EngineError("masscan must be a MasscanOptions")
        if self.plan is not None and not isinstance(self.plan, SweepPlan):
            raise EngineError("plan must be a routes.SweepPlan")

    @property
    def prober(self) -> ProbeOptions:
        """probes, or the defaults of the prober for proto (connect scanner, UDP prober)."""
        if self.probes is not None:
            return self.probes
        return UDP_PROBES if self.proto == "udp" else CONNECT_PROBES

    def probe_targets(self) -> Sequence[IPTarget]:
        """targets minus exclude, for the probers (masscan takes an exclude file instead)."""
        return subtract(self.targets, self.exclude) if self.exclude else list(self.targets)


@dataclass(frozen=True)
class SweepEvents:
    """What an engine reports while it runs (each optional; called from the engine's thread
    or its callback thread, never from inside an event loop):

    progress(percent, open ports so far); finding(f) once per open port as soon as it is
    seen; answers(batch) for every TCP probe that got an answer, open or closed (a caller
    can tell which probes got none and re-probe them, or tell a SYN proxy from a host);
    link_answers(batch): masscan only, the answers of the connect scanner it runs on on-link
    targets (they are not in answers: the connect scanner retries silence itself).
    """

    progress: Progress | None = None
    finding: Callable[[Finding], None] | None = None
    answers: Answers | None = None
    link_answers: Answers | None = None


NO_EVENTS = SweepEvents()


class SweepEngine(Protocol):
    """A sweep engine: masscan, connect or udp (scanner.engines.sweep_engine picks one)."""

    def sweep(self, options: SweepOptions, events: SweepEvents = ...) -> list[Finding]: ...


def check_exclusions(exclude: Iterable[object]) -> list[Exclusion]:
    """ipaddress networks or addresses only; an address becomes its one-address network."""
    if isinstance(exclude, str | bytes) or not isinstance(exclude, Iterable):
        raise EngineError("exclude must be a list of ipaddress networks")
    networks: list[Exclusion] = []
    for item in exclude:
        if isinstance(item, ipaddress.IPv4Address | ipaddress.IPv6Address):
            item = ipaddress.ip_network(item)
        if not isinstance(item, ipaddress.IPv4Network | ipaddress.IPv6Network):
            raise EngineError(f"exclusion {item!r} is not a validated network")
        networks.append(item)
    return networks


def check_source_ip(value: object) -> ipaddress.IPv4Address:
    if isinstance(value, str):
        try:
            value = ipaddress.ip_address(value)
        except ValueError:
            raise EngineError(f"{value!r} is not an IP address") from None
    if not isinstance(value, ipaddress.IPv4Address):
        raise EngineError(f"source address {value!r} is not an IPv4 address")
    return value


def subtract(targets: Iterable[IPTarget], exclude: Iterable[Exclusion]) -> list[Exclusion]:
    """targets minus the excluded networks, as networks (the probers take no exclude list)."""
    pieces: list[Exclusion] = [ipaddress.ip_network(t) for t in targets]
    for exclusion in exclude:
        kept: list[Exclusion] = []
        for piece in pieces:
            if piece.version != exclusion.version or not piece.overlaps(exclusion):
                kept.append(piece)
            elif exclusion.subnet_of(piece):  # type: ignore[arg-type]  # same version
                kept += piece.address_exclude(exclusion)  # type: ignore[arg-type]
        pieces = kept
    return sorted(pieces, key=lambda n: (n.version, n))
