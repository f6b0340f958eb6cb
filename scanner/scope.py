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


class ScopeError(ValueError):
    """A CIDR or target that cannot be accepted; the message is meant for the user."""


def parse_cidr(text: str) -> IPNetwork:
    """Parse a CIDR (or a bare address) strictly; host bits set is an error with a hint."""
    text = text.strip()
    if not text or text.startswith("-") or any(c.isspace() for c in text):
        raise ScopeError(f"{text!r} is not a CIDR")
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ScopeError(f"{text!r} is not a CIDR") from None
        raise ScopeError(f"{text!r} has host bits set; did you mean {loose}?") from exc
    for bad in FORBIDDEN:
        if network.version == bad.version and network.overlaps(bad):
            raise ScopeError(f"{network} overlaps reserved range {bad} and cannot be scanned")
    return network


def find_overlap(network: IPNetwork, existing: Iterable[str]) -> str | None:
    """Return the first existing CIDR that overlaps network, if any."""
    for cidr in existing:
        other = ipaddress.ip_network(cidr)
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
        return cls(
            networks=tuple((ipaddress.ip_network(c), z) for c, z in networks.items()),
            exclusions=tuple(ipaddress.ip_network(c) for c in exclusions),
        )

    def network_of(self, address: IPAddress) -> IPNetwork | None:
        for network, _zone in self.networks:
            if address.version == network.version and address in network:
                return network
        return None

    def is_excluded(self, address: IPAddress) -> bool:
        return any(address.version == ex.version and address in ex for ex in self.exclusions)

    def allows(self, address: IPAddress) -> bool:
        return self.network_of(address) is not None and not self.is_excluded(address)
