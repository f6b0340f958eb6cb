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


def normalise_network(network: IPNetwork) -> IPNetwork:
    """A network inside ::ffff:0:0/96 as the IPv4 network it maps to; others unchanged."""
    if network.version == 6 and network.subnet_of(IPV4_MAPPED):
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
            where = "is inside" if network.subnet_of(embedding) else "overlaps"
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


def parse_cidr(text: str) -> IPNetwork:
    """Parse a CIDR for scope: parse_network, then refuse reserved and IPv4-embedding ranges."""
    network = parse_network(text)
    reason = embedded_ipv4_error(network)
    if reason:
        raise ScopeError(reason)
    for bad in FORBIDDEN:
        if network.version == bad.version and network.overlaps(bad):
            raise ScopeError(f"{network} overlaps reserved range {bad} and cannot be scanned")
    return network


def find_overlap(network: IPNetwork, existing: Iterable[str]) -> str | None:
    """Return the first existing CIDR that overlaps network, if any."""
    for cidr in existing:
        other = normalise_network(ipaddress.ip_network(cidr))
        if other.version == network.version and other.overlaps(network):
            return cidr
    return None


@dataclass(frozen=True)
class Scope:
    """Networks in scope (cidr -> zone) minus exclusions; built once, queried per target."""

    networks: tuple[tuple[IPNetwork, str], ...]
    exclusions: tuple[IPNetwork, ...]

    @classmethod
    def from_cidrs(cls, networks: dict[str, str], exclusions: Iterable[str] = ()) -> "Scope":
        # Rows written before IPv4-mapped input was normalised still guard what they meant.
        return cls(
            networks=tuple(
                (normalise_network(ipaddress.ip_network(c)), z) for c, z in networks.items()
            ),
            exclusions=tuple(normalise_network(ipaddress.ip_network(c)) for c in exclusions),
        )

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
