"""The agent diff (no database): which sockets are on which host, and what changed since
the agent's last report.

A port is (host, proto, port); its owners are process identities (name, exe). PIDs are
not identity: a restarted daemon is the same owner.
- an owner that was not there and the port had no owner that left -> new_process
- an owner that was not there while a previous owner left        -> process_changed
- an owner that left                                             -> gone (history only)
"""

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from agents.schema import Socket
from alerts.kinds import EventKind

# The changes that are events, by their event kind (alerts.kinds).
NEW_PROCESS = EventKind.NEW_PROCESS
PROCESS_CHANGED = EventKind.PROCESS_CHANGED

PortKey = tuple[int, str, int]  # host_id, proto, port
Identity = tuple[str, str]  # name, exe


class AddressRefused(ValueError):
    """A socket on an address that is not the agent's; `field` names it (for the 403)."""

    def __init__(self, field: str, address: str) -> None:
        super().__init__(f"{field}: {address} is not an address of this agent's host")
        self.field = field
        self.address = address


@dataclass(frozen=True)
class HostAddresses:
    """The agent's enrolled addresses: {ip text: host_id}, in enrolment order."""

    by_ip: dict[str, int]

    def hosts_for(self, address: str, *, field: str = "address") -> tuple[int, ...]:
        """Host ids a socket bound to `address` is reachable on.

        A specific address is its own host; 0.0.0.0 is every IPv4 host, :: every host
        (Linux binds :: dual-stack by default); loopback is the first host (the socket is
        on the server, reachable from it alone).
        """
        if address in self.by_ip:
            return (self.by_ip[address],)
        ip = ipaddress.ip_address(address)
        hosts = list(self.by_ip.items())
        if ip.is_unspecified:
            if ip.version == 4:
                found = tuple(h for a, h in hosts if ipaddress.ip_address(a).version == 4)
            else:
                found = tuple(h for _, h in hosts)
            if found:
                return found
            return (hosts[0][1],)
        if ip.is_loopback:
            return (hosts[0][1],)
        raise AddressRefused(field, address)


class Seen(NamedTuple):
    """What a report says about one owner of one port."""

    key: PortKey
    identity: Identity
    socket: Socket  # the first socket of this owner on this port (pid, cmdline, ...)
    addresses: tuple[str, ...]


def sockets_by_port(
    sockets: Iterable[Socket], hosts: HostAddresses
) -> dict[tuple[PortKey, Identity], Seen]:
    """Group a report's sockets by (host, proto, port) and owner. Raises AddressRefused."""
    grouped: dict[tuple[PortKey, Identity], Seen] = {}
    for i, sock in enumerate(sockets):
        for host_id in hosts.hosts_for(sock.address, field=f"sockets[{i}].address"):
            key = ((host_id, sock.proto, sock.port), sock.identity)
            seen = grouped.get(key)
            if seen is None:
                grouped[key] = Seen(key[0], sock.identity, sock, (sock.address,))
            elif sock.address not in seen.addresses:
                grouped[key] = Seen(
                    key[0], sock.identity, seen.socket, (*seen.addresses, sock.address)
                )
    return grouped


@dataclass(frozen=True)
class Change:
    key: PortKey
    identity: Identity
    kind: str  # new_process, process_changed, gone
    previous: Identity | None = None  # process_changed: an owner that left


@dataclass(frozen=True)
class AgentDiff:
    changes: tuple[Change, ...] = ()
    kept: tuple[tuple[PortKey, Identity], ...] = field(default=())

    def of_kind(self, *kinds: str) -> list[Change]:
        return [c for c in self.changes if c.kind in kinds]


def agent_diff(
    previous: Iterable[tuple[PortKey, Identity]], current: Iterable[tuple[PortKey, Identity]]
) -> AgentDiff:
    """Compare the owners the inventory holds with the owners a report lists."""
    before: dict[PortKey, set[Identity]] = {}
    for key, ident in previous:
        before.setdefault(key, set()).add(ident)
    now: dict[PortKey, set[Identity]] = {}
    for key, ident in current:
        now.setdefault(key, set()).add(ident)
    changes: list = []
    kept: list = []
    for key in sorted(now.keys() | before.keys()):
        old, new = before.get(key, set()), now.get(key, set())
        left = sorted(old - new)
        for ident in sorted(new - old):
            if left:
                changes.append(Change(key, ident, PROCESS_CHANGED, previous=left[0]))
            else:
                changes.append(Change(key, ident, NEW_PROCESS))
        kept.extend((key, ident) for ident in sorted(new & old))
        changes.extend(Change(key, ident, "gone") for ident in left)
    return AgentDiff(changes=tuple(changes), kept=tuple(kept))
