"""Pure scope logic: parse CIDRs and decide whether an address may be scanned."""

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Ranges that are never a scan target: "this network", multicast, reserved, broadcast,
# link-local (needs an interface scope) and the IPv6 equivalents.
FORBIDDEN = [
    ipaddress.ip_network(cidr)
    for cidr in (
        "0.0.0.0/8",
        "169.254.0.0/16",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "fe80::/10",
        "ff00::/8",
    )
]

IPV4_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
# IPv6 ranges whose addresses carry an IPv4 address: a probe to one reaches (through the
# kernel, a translator or a tunnel) an IPv4 host that IPv4 scope and exclusions never see.
# IPv4-mapped networks are rewritten as IPv4 (normalise_network); one that only partly
# covers ::ffff:0:0/96 cannot be, so it is refused like the others.
EMBEDS_IPV4 = {
    IPV4_MAPPED: "IPv4-mapped",
    ipaddress.ip_network("64:ff9b::/96"): "NAT64",
    ipaddress.ip_network("64:ff9b:1::/48"): "local NAT64",
    ipaddress.ip_network("2002::/16"): "6to4",
    ipaddress.ip_network("2001::/32"): "Teredo",
}


class ScopeError(ValueError):
    """A CIDR or target that cannot be accepted; the message is meant for the user."""


def normalise_address(address: IPAddress) -> IPAddress:
    """::ffff:a.b.c.d is a.b.c.d: the kernel sends it as IPv4, so scope must see IPv4."""
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def within(inner: IPNetwork, outer: IPNetwork) -> bool:
    """inner.subnet_of(outer), False across IP versions (where subnet_of raises)."""
    if isinstance(inner, ipaddress.IPv4Network) and isinstance(outer, ipaddress.IPv4Network):
        return inner.subnet_of(outer)
    if isinstance(inner, ipaddress.IPv6Network) and isinstance(outer, ipaddress.IPv6Network):
        return inner.subnet_of(outer)
    return False


def normalise_network(network: IPNetwork) -> IPNetwork:
    """A network inside ::ffff:0:0/96 as the IPv4 network it maps to; others unchanged."""
    if within(network, IPV4_MAPPED):
        return ipaddress.IPv4Network(
            (int(network.network_address) & 0xFFFFFFFF, network.prefixlen - 96)
        )
    return network


def embedded_ipv4_error(network: IPNetwork) -> str | None:
    """Why network may not be scanned as IPv6 (it embeds IPv4 addresses), or None."""
    if network.version != 6:
        return None
    for embedding, kind in EMBEDS_IPV4.items():
        if network.overlaps(embedding):
            where = "is inside" if within(network, embedding) else "overlaps"
            return (
                f"{network} {where} {embedding} ({kind}), whose addresses embed IPv4 "
                "addresses and would dodge IPv4 exclusions; use the IPv4 addresses instead"
            )
    return None


def parse_network(text: str) -> IPNetwork:
    """Parse a CIDR (or a bare address) strictly, IPv4-mapped written as IPv4; no policy."""
    text = text.strip()
    # A scope id (fe80::1%eth0) would travel into command lines; IPv6 scopes need none.
    if not text or text.startswith("-") or not text.isascii() or "%" in text:
        raise ScopeError(f"{text!r} is not a CIDR")
    if any(c.isspace() for c in text):
        raise ScopeError(f"{text!r} is not a CIDR")
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        try:
            loose = normalise_network(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ScopeError(f"{text!r} is not a CIDR") from None
        raise ScopeError(f"{text!r} has host bits set; did you mean {loose}?") from exc
    return normalise_network(network)


def forbidden_error(network: IPNetwork) -> str | None:
    """Why network may never be scanned (it touches a reserved range), or None."""
    for bad in FORBIDDEN:
        if network.version == bad.version and network.overlaps(bad):
            return f"{network} overlaps reserved range {bad} and cannot be scanned"
    return None


def parse_cidr(text: str) -> IPNetwork:
    """Parse a CIDR for scope: parse_network, then refuse reserved and IPv4-embedding ranges.

    The one validator of scope CIDRs: the CLI, the API, the models' clean() (so the admin)
    and the scope read back from the database (Scope.from_cidrs) all go through it.
    """
    network = parse_network(text)
    reason = embedded_ipv4_error(network) or forbidden_error(network)
    if reason:
        raise ScopeError(reason)
    return network


def network_check(text: str, *, existing: Iterable[str]) -> IPNetwork:
    """A new or edited network: a valid scope CIDR that overlaps no other network."""
    network = parse_cidr(text)
    clash = find_overlap(network, existing)
    if clash:
        raise ScopeError(f"{network} overlaps network {clash} already in scope")
    return network


def exclusion_check(text: str, *, parent: str, existing: Iterable[str]) -> IPNetwork:
    """A new or edited exclusion: a valid scope CIDR inside parent, overlapping no other."""
    excluded = parse_cidr(text)
    network = stored_network(parent)
    if network is None or not within(excluded, network):
        raise ScopeError(f"{excluded} is not inside network {parent}")
    clash = find_overlap(excluded, existing)
    if clash:
        raise ScopeError(f"{excluded} overlaps exclusion {clash} already present")
    return excluded


def stored_network(cidr: str) -> IPNetwork | None:
    """A stored row's CIDR as a network (IPv4-mapped as IPv4); None when it is not one.

    Not parse_cidr: a row saved before a rule existed (an IPv4-mapped or NAT64 network)
    must still be found, excluded from and removed; and a garbage row (saved through a
    path that skipped validation) must not make every reader fail.
    """
    try:
        return normalise_network(ipaddress.ip_network(cidr.strip()))
    except ValueError:
        return None


def find_overlap(network: IPNetwork, existing: Iterable[str]) -> str | None:
    """Return the first existing CIDR that overlaps network, if any."""
    for cidr in existing:
        other = stored_network(cidr)
        if other is not None and other.version == network.version and other.overlaps(network):
            return cidr
    return None


@dataclass(frozen=True)
class Scope:
    """Networks in scope (cidr -> zone) minus exclusions; built once, queried per target.

    ignored: why stored rows were left out (a network that is no valid scope CIDR, an
    exclusion that is no CIDR at all); `manage.py doctor` lists them.
    """

    networks: tuple[tuple[IPNetwork, str], ...]
    exclusions: tuple[IPNetwork, ...]
    ignored: tuple[str, ...] = ()

    @classmethod
    def from_cidrs(cls, networks: dict[str, str], exclusions: Iterable[str] = ()) -> "Scope":
        """The scope from stored rows, each network checked again whatever wrote it.

        A network that parse_cidr refuses (garbage, 0.0.0.0/0, a metadata range) grants
        nothing; an exclusion only needs to be a network: excluding more is always safe.
        Rows written before IPv4-mapped input was normalised still guard what they meant.
        """
        kept, excluded, ignored = [], [], []
        for cidr, zone in networks.items():
            try:
                kept.append((parse_cidr(cidr), zone))
            except ScopeError as exc:
                ignored.append(f"network {cidr!r} ignored: {exc}")
        for cidr in exclusions:
            network = stored_network(cidr)
            if network is None:
                ignored.append(f"exclusion {cidr!r} ignored: {cidr!r} is not a CIDR")
            else:
                excluded.append(network)
        return cls(networks=tuple(kept), exclusions=tuple(excluded), ignored=tuple(ignored))

    def network_of(self, address: IPAddress) -> IPNetwork | None:
        address = normalise_address(address)
        for network, _zone in self.networks:
            if address.version == network.version and address in network:
                return network
        return None

    def is_excluded(self, address: IPAddress) -> bool:
        address = normalise_address(address)
        return any(address.version == ex.version and address in ex for ex in self.exclusions)

    def allows(self, address: IPAddress) -> bool:
        return self.network_of(address) is not None and not self.is_excluded(address)
