"""Pure diff logic: what one run's results mean, given the history (no database).

The service (alerts.services.diff) loads plain values, calls these functions and writes.
Semantics (see docs/alerts.md):
- A run only speaks about what it covered: hosts inside its targets (or, for an import
  without targets, the hosts it reports) and ports inside its port list.
- "Missed" counts only healthy runs that covered a port and did not see it.
- A port is *newly open* when it was never seen before, was closed, or the last healthy
  run(s) covering it missed it.
"""

import ipaddress
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from alerts.kinds import EventKind


@dataclass(frozen=True)
class Fingerprint:
    service: str = ""
    product: str = ""
    version: str = ""

    @property
    def label(self) -> str:
        return " ".join(p for p in (self.service, self.product, self.version) if p)

    def as_dict(self) -> dict:
        return {
            "service": self.service,
            "product": self.product,
            "version": self.version,
            "label": self.label,
        }


def fingerprint_changed(old: Fingerprint | None, new: Fingerprint | None) -> bool:
    """True when the service or product changed (http -> mysql, nginx -> apache).

    A version bump is not a change worth an alert, and an empty side (not fingerprinted,
    or nmap could not tell this time) is "unknown", not a change.
    """
    if old is None or new is None:
        return False
    if old.service and new.service and old.service != new.service:
        return True
    return bool(old.product and new.product and old.product != new.product)


@dataclass(frozen=True)
class Coverage:
    """Which hosts and ports a run scanned: only those can be "missed" by it."""

    addresses: frozenset
    networks: tuple
    port_ranges: tuple[tuple[int, int], ...]
    # Targets given as host names: matched against Host.hostname by the service.
    names: frozenset = frozenset()
    # UDP ports probed: coverage is per protocol (a TCP sweep never misses a UDP port).
    udp_port_ranges: tuple[tuple[int, int], ...] = ()

    def covers_ip(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if address in self.addresses:
            return True
        return any(address.version == n.version and address in n for n in self.networks)

    def covers_port(self, port: int, proto: str = "tcp") -> bool:
        ranges = self.udp_port_ranges if proto == "udp" else self.port_ranges
        return any(lo <= port <= hi for lo, hi in ranges)

    def ranges_of(self, proto: str) -> tuple[tuple[int, int], ...]:
        return self.udp_port_ranges if proto == "udp" else self.port_ranges

    @property
    def only_addresses(self) -> bool:
        return not self.networks


def coverage_parse(targets: str, ports: str, udp_ports: str = "") -> Coverage:
    """Read a run's targets and TCP / UDP ports; other tokens are kept as host names.

    An unreadable port list covers nothing rather than everything: a wrong guess there
    would turn into false "closed" events.
    """
    addresses, networks, names = set(), [], set()
    for token in re.split(r"[,\s]+", targets or ""):
        if not token:
            continue
        try:
            if "/" in token:
                network = ipaddress.ip_network(token, strict=False)
                if network.num_addresses == 1:
                    addresses.add(network.network_address)
                else:
                    networks.append(network)
            else:
                addresses.add(ipaddress.ip_address(token))
        except ValueError:
            names.add(token.lower().rstrip("."))
    return Coverage(
        frozenset(addresses),
        tuple(networks),
        _port_tokens(ports),
        frozenset(names),
        _port_tokens(udp_ports),
    )


def _port_tokens(text: str) -> tuple[tuple[int, int], ...]:
    ranges = []
    for token in re.split(r"[,\s]+", text or ""):
        match = re.fullmatch(r"(\d{1,5})(?:-(\d{1,5}))?", token)
        if match:
            lo, hi = int(match.group(1)), int(match.group(2) or match.group(1))
            ranges.append((lo, hi))
    return tuple(ranges)


def port_ranges_parse(text: str) -> tuple[tuple[int, int], ...]:
    """Merged (lo, hi) ranges of a port list such as "22,80-90"; unreadable items are skipped."""
    return port_ranges_union(coverage_parse("", text).port_ranges)


def port_ranges_union(*groups: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Sorted, merged union of port ranges (adjacent ranges join: 1-5 and 6-9 are 1-9)."""
    merged: list[list[int]] = []
    for lo, hi in sorted(r for group in groups for r in group):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return tuple((lo, hi) for lo, hi in merged)


def port_ranges_text(ranges: Sequence[tuple[int, int]]) -> str:
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)


def ports_covered(ranges: Sequence[tuple[int, int]], port: int) -> bool:
    return any(lo <= port <= hi for lo, hi in ranges)


def ranges_parse(text: str) -> tuple[tuple[int, int], ...]:
    """Merged (lo, hi) integer ranges from "1-5,9" (address ranges are integers too)."""
    ranges = []
    for token in (text or "").split(","):
        match = re.fullmatch(r"\s*(\d+)(?:-(\d+))?\s*", token)
        if match:
            lo, hi = int(match.group(1)), int(match.group(2) or match.group(1))
            ranges.append((lo, hi))
    return port_ranges_union(ranges)


def ranges_contain(outer: Sequence[tuple[int, int]], inner: Sequence[tuple[int, int]]) -> bool:
    """Every value of `inner` lies in `outer` (both merged and sorted)."""
    return all(any(lo <= ilo and ihi <= hi for lo, hi in outer) for ilo, ihi in inner)


def address_ranges(coverage: Coverage, network, extra: Sequence[str] = ()) -> tuple:
    """The addresses of `network` the run covered, as merged integer ranges.

    coverage: the run's targets; extra: addresses of hosts named by host name there.
    """
    ranges = []
    for address in [*coverage.addresses, *map(ipaddress.ip_address, extra)]:
        if address.version == network.version and address in network:
            ranges.append((int(address), int(address)))
    for target in coverage.networks:
        if target.version != network.version or not target.overlaps(network):
            continue
        inner = target if target.subnet_of(network) else network
        ranges.append((int(inner.network_address), int(inner.broadcast_address)))
    return port_ranges_union(ranges)


@dataclass(frozen=True)
class Span:
    """What one healthy run covered in one network: address ranges x port ranges, at a time.

    A network's coverage is the list of its spans; a port is covered at `at` on an address
    when some span at or before `at` holds both. Runs that repeat the same coverage add no
    span (span_redundant), so a daily policy keeps one span until its coverage grows.
    """

    at: datetime
    addresses: tuple[tuple[int, int], ...]
    ports: tuple[tuple[int, int], ...]
    proto: str = "tcp"

    def covers(self, address: int, port: int, proto: str = "tcp") -> bool:
        return (
            self.proto == proto
            and ports_covered(self.addresses, address)
            and ports_covered(self.ports, port)
        )

    def contains(self, other: "Span") -> bool:
        return (
            self.proto == other.proto
            and ranges_contain(self.addresses, other.addresses)
            and ranges_contain(self.ports, other.ports)
        )


def first_covered(
    spans: Sequence[Span], address: int, port: int, proto: str = "tcp"
) -> datetime | None:
    """When a healthy run first covered this address and port (spans: any order)."""
    times = [s.at for s in spans if s.covers(address, port, proto)]
    return min(times) if times else None


def span_redundant(spans: Sequence[Span], new: Span) -> bool:
    """A span adds nothing when one no later than it already holds all of it."""
    return any(s.at <= new.at and s.contains(new) for s in spans)


def is_baseline(
    *, first_covered: datetime | None, at: datetime, window: timedelta, host_first: bool = False
) -> bool:
    """A port seen for the first time is baseline (recorded quietly), not news, when
    - no earlier healthy run covered its address and port, whether or not anything had
      answered there (the network's first scan, or a port range that grew);
    - or that first coverage is less than the new-port window old: a scan misses ports, and
      one missed on the day it was first covered is not new the day after;
    - or (host_first) its network's baseline is per host and its host never answered before.
    A new host inside addresses scanned before the window is news: nothing was there.
    """
    if host_first or first_covered is None:
        return True
    return at < first_covered + window


def is_degraded(
    *,
    hosts_found: int,
    ports_found: int,
    baseline: Sequence[tuple[int, int]],
    ratio: float,
    min_runs: int = 3,
) -> bool:
    """A run that found far fewer hosts or ports than the median of recent healthy runs.

    baseline: (hosts_found, ports_found) of the peer runs; fewer than min_runs: no verdict.
    """
    if len(baseline) < min_runs:
        return False
    median_hosts = statistics.median(h for h, _ in baseline)
    median_ports = statistics.median(p for _, p in baseline)
    return ports_found < ratio * median_ports or hosts_found < ratio * median_hosts


@dataclass(frozen=True)
class Sighting:
    """A port seen by the run being diffed, with what history says about it."""

    high_risk: bool
    # Latest observation by another run at or before this run's time (any age).
    prev_seen: datetime | None
    # Consecutive healthy covering runs that missed it, before this run.
    missed_before: int = 0
    # A "closed" event was raised after its last sighting.
    was_closed: bool = False
    old_fp: Fingerprint | None = None
    new_fp: Fingerprint | None = None
    # Never seen, and never covered before or still learnt (is_baseline): recorded quietly.
    baseline: bool = False

    @property
    def newly_open(self) -> bool:
        return self.prev_seen is None or self.was_closed or self.missed_before > 0


def sighting_events(s: Sighting, *, at: datetime, window: timedelta) -> list[tuple[str, dict]]:
    """Events one sighting raises: [(kind, detail)], usually none.

    - high-risk port newly open: high_risk (at once; the N-day rule is for other ports);
    - closed port back: reopened;
    - other port: new_port only if not seen in the window before `at`, and either never
      seen (and not baseline) or missed by a healthy run since (a gap made only of
      degraded runs, or of no runs at all, is no evidence that the port went away);
    - fingerprint change: service_changed (in addition).
    """
    events: list[tuple[str, dict]] = []
    if s.high_risk and s.newly_open:
        reason = "new" if s.prev_seen is None else ("reopened" if s.was_closed else "back")
        events.append((EventKind.HIGH_RISK, {"reason": reason}))
    elif s.was_closed:
        events.append((EventKind.REOPENED, {}))
    elif s.prev_seen is None:
        if not s.baseline:
            events.append((EventKind.NEW_PORT, {"reason": "never seen"}))
    elif s.prev_seen < at - window and s.missed_before > 0:
        days = (at - s.prev_seen).days
        events.append((EventKind.NEW_PORT, {"reason": f"not seen for {days} days"}))
    if s.old_fp is not None and s.new_fp is not None and fingerprint_changed(s.old_fp, s.new_fp):
        events.append(
            (EventKind.SERVICE_CHANGED, {"old": s.old_fp.as_dict(), "new": s.new_fp.as_dict()})
        )
    return events


def miss_outcome(*, missed_before: int, closed_after: int) -> tuple[int, bool]:
    """One more healthy covering run did not see an open port: (missed_runs, now closed)."""
    missed = missed_before + 1
    return missed, missed >= closed_after
