"""Pure target and port parsing, the scope guard and shard planning.

Everything a user types passes through here before it can reach an engine: what comes
out is ipaddress objects and integer port ranges, never text.
"""

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from scanner.scope import IPAddress, IPNetwork, Scope, ScopeError

PortRanges = tuple[tuple[int, int], ...]

# RFC 1123 host names only: letters, digits, hyphens, dots; no leading hyphen anywhere.
HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
    r"(\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)
MAX_TARGET_ADDRESSES = 1 << 24  # a /8: more is almost certainly a typo


class TargetError(ScopeError):
    """A target or port specification that cannot be accepted."""


def parse_ports(text: str) -> PortRanges:
    """Parse '22,80,1000-2000' into merged, sorted (lo, hi) ranges."""
    if not text or not text.strip():
        raise TargetError("no ports given")
    ranges = []
    for token in re.split(r"[,\s]+", text.strip()):
        if not token:
            continue
        match = re.fullmatch(r"(\d{1,5})(?:-(\d{1,5}))?", token)
        if not match:
            raise TargetError(f"{token!r} is not a port or port range (e.g. 22, 1-1024)")
        lo = int(match.group(1))
        hi = int(match.group(2) or lo)
        if not 1 <= lo <= hi <= 65535:
            raise TargetError(f"{token!r} is outside 1-65535 or reversed")
        ranges.append((lo, hi))
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return tuple(merged)


def format_ports(ranges: PortRanges) -> str:
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)


def count_ports(ranges: PortRanges) -> int:
    return sum(hi - lo + 1 for lo, hi in ranges)


def port_list(ranges: PortRanges) -> list[int]:
    return [p for lo, hi in ranges for p in range(lo, hi + 1)]


Resolver = Callable[[str], list[str]]


def resolve_host(name: str) -> list[str]:
    """All addresses a host name resolves to (the system resolver, /etc/hosts included)."""
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise TargetError(f"cannot resolve {name!r}: {exc.strerror}") from None
    return sorted({info[4][0].split("%")[0] for info in infos})


def _split(text: str | Iterable[str]) -> list[str]:
    items = [text] if isinstance(text, str) else list(text)
    return [tok for item in items for tok in re.split(r"[,\s]+", item.strip()) if tok]


def parse_targets(
    text: str | Iterable[str], *, resolver: Resolver = resolve_host
) -> list[IPNetwork]:
    """Parse IPs, CIDRs and host names into networks; anything else is an error."""
    networks: list[IPNetwork] = []
    names: list[str] = []
    tokens = _split(text)
    if not tokens:
        raise TargetError("no targets given")
    # Every token is checked before any name is resolved: one bad token stops the run.
    for token in tokens:
        try:
            networks.append(ipaddress.ip_network(token, strict=True))
            continue
        except ValueError:
            pass
        try:
            loose = ipaddress.ip_network(token, strict=False)
            raise TargetError(f"{token!r} has host bits set; did you mean {loose}?")
        except ValueError:
            pass
        if token.startswith("-") or not HOSTNAME_RE.match(token) or token.isdigit():
            raise TargetError(f"{token!r} is not an IP address, CIDR or host name")
        names.append(token)
    for name in names:
        networks.extend(ipaddress.ip_network(address) for address in resolver(name))
    total = sum(n.num_addresses for n in networks)
    if total > MAX_TARGET_ADDRESSES:
        raise TargetError(f"{total} addresses is more than the limit of {MAX_TARGET_ADDRESSES}")
    return list(ipaddress.collapse_addresses([n for n in networks if n.version == 4])) + list(
        ipaddress.collapse_addresses([n for n in networks if n.version == 6])
    )


@dataclass(frozen=True)
class GuardedTargets:
    """Targets proven to be inside scope, with the exclusions that fall inside them."""

    networks: tuple[IPNetwork, ...]
    exclusions: tuple[IPNetwork, ...]
    zones: frozenset[str]

    def addresses(self) -> Iterator[IPAddress]:
        for network in self.networks:
            hosts = [network.network_address] if network.num_addresses == 1 else network
            for address in hosts:
                if not any(
                    address.version == ex.version and address in ex for ex in self.exclusions
                ):
                    yield address

    @property
    def address_count(self) -> int:
        return sum(1 for _ in self.addresses())


def guard(networks: Iterable[IPNetwork], scope: Scope) -> GuardedTargets:
    """Check that every target lies wholly inside one network in scope.

    Exclusions inside a target are carried along (engines skip them); a target that
    is entirely excluded is an error, as is one that reaches outside scope.
    """
    networks = list(networks)
    zones = set()
    exclusions = set()
    for target in networks:
        parent = next(
            (
                (net, zone)
                for net, zone in scope.networks
                if net.version == target.version and target.subnet_of(net)
            ),
            None,
        )
        if parent is None:
            raise TargetError(
                f"{target} is outside the configured scope (see: manage.py scope list)"
            )
        zones.add(parent[1])
        for ex in scope.exclusions:
            if ex.version != target.version or not ex.overlaps(target):
                continue
            if target.subnet_of(ex):
                raise TargetError(f"{target} is excluded from scanning by {ex}")
            exclusions.add(ex)
    return GuardedTargets(
        networks=tuple(networks),
        exclusions=tuple(sorted(exclusions, key=lambda n: (n.version, n))),
        zones=frozenset(zones),
    )


@dataclass(frozen=True)
class ShardPlan:
    targets: tuple[IPNetwork, ...]
    ports: PortRanges

    @property
    def probes(self) -> int:
        return sum(n.num_addresses for n in self.targets) * count_ports(self.ports)


def _split_ports(ranges: PortRanges, size: int) -> list[PortRanges]:
    """Cut port ranges into pieces of at most size ports."""
    pieces: list[PortRanges] = []
    current: list[tuple[int, int]] = []
    room = size
    for lo, hi in ranges:
        while lo <= hi:
            take = min(room, hi - lo + 1)
            current.append((lo, lo + take - 1))
            lo += take
            room -= take
            if room == 0:
                pieces.append(tuple(current))
                current, room = [], size
    if current:
        pieces.append(tuple(current))
    return pieces


def plan_shards(targets: GuardedTargets, ports: PortRanges, *, max_probes: int) -> list[ShardPlan]:
    """Split a run into shards of at most max_probes probes: host chunks x port ranges."""
    addresses = list(targets.addresses())
    if not addresses:
        raise TargetError("every target address is excluded; nothing to scan")
    n_ports = count_ports(ports)
    if n_ports <= max_probes:
        hosts_per_shard = max(1, max_probes // n_ports)
        port_pieces = [ports]
    else:
        hosts_per_shard = 1
        port_pieces = _split_ports(ports, max_probes)
    shards = []
    for start in range(0, len(addresses), hosts_per_shard):
        chunk = addresses[start : start + hosts_per_shard]
        collapsed = tuple(
            net
            for version in (4, 6)
            for net in ipaddress.collapse_addresses(
                ipaddress.ip_network(a) for a in chunk if a.version == version
            )
        )
        for piece in port_pieces:
            shards.append(ShardPlan(targets=collapsed, ports=piece))
    return shards


def format_targets(networks: Iterable[IPNetwork]) -> str:
    return ",".join(str(n.network_address) if n.num_addresses == 1 else str(n) for n in networks)
