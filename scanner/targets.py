"""Pure target and port parsing, the scope guard and shard planning.

Everything a user types passes through here before it can reach an engine: what comes
out is ipaddress objects and integer port ranges, never text.
"""

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from scanner.scope import (
    IPAddress,
    IPNetwork,
    Scope,
    ScopeError,
    embedded_ipv4_error,
    forbidden_error,
    normalise_address,
    normalise_network,
    within,
)

PortRanges = tuple[tuple[int, int], ...]

# RFC 1123 host names only: letters, digits, hyphens, dots; no leading hyphen anywhere.
HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
    r"(\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)
# Exactly four decimal octets, no leading zeros: the resolver (inet_aton) would also take
# 0x7f.1, 0177.0.0.1, 127.1 and 2130706433, so those never get that far.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4_RE = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
PREFIX_RE = re.compile(r"0|[1-9][0-9]{0,2}")  # no /08, no /255.0.0.0 netmasks
PORT_RE = re.compile(r"([1-9][0-9]{0,4})(?:-([1-9][0-9]{0,4}))?")  # ASCII digits only
PORT_SPACES = " \t"
MAX_TARGET_ADDRESSES = 1 << 24  # a /8: more is almost certainly a typo
# UDP ports scanned by default: services with a known request that answers, and that a
# security team fears exposed (amplifiers, management planes, unauthenticated reads).
UDP_DEFAULT_PORTS = (
    "53,69,111,123,137,161,177,389,500,520,623,1194,1900,3478,3702,5060,5351,5353,5683,"
    "10001,11211,17185"
)
IPV4_HINT = "write IPv4 as four decimal numbers without leading zeros, e.g. 127.0.0.1"


class TargetError(ScopeError):
    """A target or port specification that cannot be accepted."""


def parse_ports(text: str) -> PortRanges:
    """Parse '22,80, 1000-2000' into merged, sorted (lo, hi) ranges.

    Grammar: PORT or PORT-PORT, comma separated (spaces around commas allowed), ports
    1-65535 in ASCII digits without sign or leading zero. int() and \\d would also take
    full-width and other Unicode digits.
    """
    if not text or not text.strip(PORT_SPACES):
        raise TargetError("no ports given")
    ranges = []
    for token in text.strip(PORT_SPACES).split(","):
        token = token.strip(PORT_SPACES)
        if not token:
            raise TargetError(f"{text!r} has an empty item between commas")
        match = PORT_RE.fullmatch(token)
        if not match:
            raise TargetError(
                f"{token!r} is not a port or port range (e.g. 22, 1-1024; separate with commas)"
            )
        lo = int(match.group(1))
        hi = int(match.group(2) or lo)
        if hi > 65535:
            raise TargetError(f"{token!r} is outside 1-65535")
        if lo > hi:
            raise TargetError(f"{token!r} is reversed; did you mean {hi}-{lo}?")
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
    return sorted({str(info[4][0]).split("%")[0] for info in infos})


def _split(text: str | Iterable[str]) -> list[str]:
    items = [text] if isinstance(text, str) else list(text)
    # ASCII separators only: other Unicode spaces stay inside a token and get it refused.
    return [tok for item in items for tok in re.split(r"[,\s]+", item.strip(), flags=re.A) if tok]


def _address(text: str) -> IPAddress | None:
    """The address text spells (IPv4-mapped as IPv4); None when it is no address at all."""
    if ":" in text:  # only IPv6 has colons; a host name never does
        if "%" in text:
            raise TargetError(f"{text!r}: IPv6 scope ids (%) are not accepted")
        try:
            return normalise_address(ipaddress.IPv6Address(text))
        except ValueError:
            raise TargetError(f"{text!r} is not a valid IPv6 address") from None
    if IPV4_RE.fullmatch(text):
        return ipaddress.IPv4Address(text)
    return None


def _network(token: str) -> IPNetwork:
    address_text, _, prefix = token.partition("/")
    address = _address(address_text)
    if address is None:
        raise TargetError(f"{token!r} is not a CIDR ({IPV4_HINT})")
    if not PREFIX_RE.fullmatch(prefix) or int(prefix) > (128 if ":" in address_text else 32):
        raise TargetError(f"{token!r} has a bad prefix length (a number like /24 or /64)")
    try:
        return normalise_network(ipaddress.ip_network(f"{address_text}/{prefix}", strict=True))
    except ValueError:
        loose = normalise_network(ipaddress.ip_network(f"{address_text}/{prefix}", strict=False))
        raise TargetError(f"{token!r} has host bits set; did you mean {loose}?") from None


def _range(token: str) -> list[IPNetwork] | None:
    """'A-B' as the CIDRs covering it; None when the token is no address range."""
    first, _, last = token.partition("-")
    ends = [_address(first), _address(last) if "-" not in last else None]
    if ends == [None, None]:
        return None  # a host name with a hyphen
    lo, hi = ends
    if lo is None or hi is None or lo.version != hi.version:
        example = "198.18.0.1-198.18.0.20"
        raise TargetError(f"{token!r} is not an address range; write both ends in full: {example}")
    if int(lo) > int(hi):  # the same IP version, checked above
        raise TargetError(f"{token!r} is reversed; did you mean {hi}-{lo}?")
    return list(ipaddress.summarize_address_range(lo, hi))


def _host_name(token: str) -> str:
    if not HOSTNAME_RE.match(token):
        raise TargetError(f"{token!r} is not an IP address, CIDR, range or host name")
    # A top-level label is never numeric: 127.1, 0x7f.0.0.1 and 2130706433 are addresses
    # to the resolver (inet_aton), which would reach what the IPv4 grammar refused.
    if not token.rstrip(".").rsplit(".", 1)[-1][0].isalpha():
        raise TargetError(f"{token!r} is not an IP address or host name ({IPV4_HINT})")
    return token


def _target(token: str) -> list[IPNetwork] | str:
    """Networks for an address, CIDR or range token; the name itself for a host name."""
    if not token.isascii():
        raise TargetError(
            f"{token!r} has non-ASCII characters (digits and dots must be ASCII; "
            "write international names as xn--)"
        )
    if token.startswith("-"):
        raise TargetError(f"{token!r} is not an IP address, CIDR or host name")
    if "/" in token:
        return [_network(token)]
    if "-" in token:
        networks = _range(token)
        if networks is not None:
            return networks
    address = _address(token)
    if address is not None:
        return [ipaddress.ip_network(address)]
    return _host_name(token)


def parse_targets(
    text: str | Iterable[str], *, resolver: Resolver = resolve_host
) -> list[IPNetwork]:
    """Parse IPs, CIDRs, A-B ranges and host names into networks; anything else is an error."""
    networks: list[IPNetwork] = []
    names: list[str] = []
    tokens = _split(text)
    if not tokens:
        raise TargetError("no targets given")
    # Every token is checked before any name is resolved: one bad token stops the run.
    for token in tokens:
        parsed = _target(token)
        if isinstance(parsed, str):
            names.append(parsed)
        else:
            networks.extend(parsed)
    for name in names:
        for address in resolver(name):
            networks.append(normalise_network(ipaddress.ip_network(address)))
    for network in networks:
        reason = embedded_ipv4_error(network)
        if reason:
            raise TargetError(reason)
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

    Exclusions inside a target are carried along (engines skip them), and a target wholly
    inside an exclusion is dropped, as a range's excluded piece must be (a range arrives
    here as several CIDRs); an error when nothing is left, or a target is outside scope.
    Reserved ranges are refused here too, whatever the scope says: this runs at plan time
    and again in the worker, after every path that could have stored a network.
    """
    kept: list[IPNetwork] = []
    zones = set()
    exclusions = set()
    refusal = ""
    for target in networks:
        forbidden = forbidden_error(target) or embedded_ipv4_error(target)
        if forbidden:
            raise TargetError(forbidden)
        parent = next(
            ((net, zone) for net, zone in scope.networks if within(target, net)),
            None,
        )
        if parent is None:
            ignored = (
                f"; {len(scope.ignored)} invalid stored scope row(s) ignored "
                "(see: manage.py doctor)"
                if scope.ignored
                else ""
            )
            raise TargetError(
                f"{target} is outside the configured scope (see: manage.py scope list){ignored}"
            )
        overlapping = [
            ex for ex in scope.exclusions if ex.version == target.version and ex.overlaps(target)
        ]
        covering = next((ex for ex in overlapping if within(target, ex)), None)
        if covering is not None:
            refusal = refusal or f"{target} is excluded from scanning by {covering}"
            continue
        kept.append(target)
        zones.add(parent[1])
        exclusions.update(overlapping)
    if not kept and refusal:
        raise TargetError(refusal)
    return GuardedTargets(
        networks=tuple(kept),
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
        collapsed: tuple[IPNetwork, ...] = (
            *ipaddress.collapse_addresses(
                ipaddress.IPv4Network(a) for a in chunk if isinstance(a, ipaddress.IPv4Address)
            ),
            *ipaddress.collapse_addresses(
                ipaddress.IPv6Network(a) for a in chunk if isinstance(a, ipaddress.IPv6Address)
            ),
        )
        for piece in port_pieces:
            shards.append(ShardPlan(targets=collapsed, ports=piece))
    return shards


def format_targets(networks: Iterable[IPNetwork]) -> str:
    return ",".join(str(n.network_address) if n.num_addresses == 1 else str(n) for n in networks)


def address_order(ip: str) -> tuple[int, int, str]:
    """Sort key for addresses: numeric (10.0.0.9 before 10.0.0.10), IPv4 before IPv6."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:  # not expected from Host.ip; still sorted, after every address
        return (99, 0, ip)
    return (address.version, int(address), "")
