"""Where masscan's frames must leave: each target resolved through the kernel's routing table.

masscan does not route: it writes raw Ethernet frames on one interface (the default route's
unless --adapter is given), with one source address and one destination MAC (--router-mac)
in every frame. Left to its defaults it sends a lab's or a VLAN's probes out of the uplink.
So before a sweep every target is resolved with `ip -j route get` (the kernel's answer,
policy rules included) into (interface, source address, gateway), targets are grouped by
that triple, and each group gets its own masscan with the gateway's MAC from the neighbour
table.

On-link targets (a route with no gateway) are not given to masscan at all: their hosts have
distinct MACs and masscan can put only one in its frames, so a sweep would reach one host or
none (or a gateway, which is worse). They go to the connect scanner instead, where the kernel
resolves each neighbour (see masscan.sweep).

A target network is split at every more specific prefix of the routing tables (and at every
`ip rule ... to PREFIX`) inside it, so each piece has one route. Rules that select by
anything but the destination (fwmark, uid, source port) are not seen: masscan's raw frames
do not go through them either. An ECMP route gets the one next hop the kernel picks.

`python -c 'from scanner.engines.routes import main; main()' ADDR|CIDR ...` prints the plan
as JSON (the tests run it inside network namespaces; handy on a scanner host too).
"""

import contextlib
import ipaddress
import json
import re
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from .base import EngineError, run_process

Network = ipaddress.IPv4Network
Address = ipaddress.IPv4Address
# (argv after "ip", batch commands or None) -> (exit code, stdout); tests pass a fake.
IpRunner = Callable[[Sequence[str], str | None], tuple[int, str]]

# Route types that mean "do not send": the kernel would drop or refuse the packet, so a
# masscan that ignores them (it does) must not run either.
REFUSED_TYPES = ("blackhole", "unreachable", "prohibit", "throw")
NO_ROUTE = "none"  # our own marker: `ip route get` failed and no refusing route explains it
# A neighbour entry in these states has no usable MAC yet (or never will).
_UNUSABLE_NEIGHBOUR = {"INCOMPLETE", "FAILED", "NONE"}
# ARP normally answers in milliseconds; a gateway silent for this long is not there.
NEIGHBOUR_WAIT_S = 3.0
_NEIGHBOUR_POLL_S = 0.05
# The discard port: the probe datagram exists only to make the kernel resolve the gateway.
_DISCARD_PORT = 9
_IP_TIMEOUT_S = 30.0
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
# SO_BINDTODEVICE is missing from the socket module on some Pythons.
_SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)


class RouteRefused(EngineError):
    """A route masscan must not follow: the shard fails at once (a retry would meet it too)."""


class RouteChanged(RouteRefused):
    """The route to a target is not the one the shard's first attempt swept by."""


@dataclass(frozen=True)
class Route:
    """One `ip -j route get` answer, reduced to what a sweep needs."""

    type: str  # "unicast", "local", "broadcast", ... (ip omits "unicast")
    dev: str | None
    src: Address | None
    gateway: Address | None
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Egress:
    """One masscan run: its interface, source address and next hop, and the targets behind it."""

    interface: str
    source_ip: Address
    gateway: Address
    router_mac: str
    targets: tuple[Network, ...]


@dataclass
class SweepPlan:
    masscan: list[Egress] = field(default_factory=list)
    # On-link hosts (and this machine's own addresses inside a larger target): the connect
    # scanner's job, where the kernel picks each host's MAC.
    connect: list[Network] = field(default_factory=list)


def default_ip(argv: Sequence[str], batch: str | None = None) -> tuple[int, str]:
    """Run `ip` with argv (after "ip"); with batch, argv ends in -batch and gets its file."""
    if batch is None:
        result = run_process(["ip", *argv], timeout=_IP_TIMEOUT_S)
        return result.returncode, result.stdout
    # run_process gives no stdin: batch mode reads its commands from a private file instead.
    with tempfile.NamedTemporaryFile("w", prefix="portmon-ip-", suffix=".batch") as fh:
        fh.write(batch)
        fh.flush()
        result = run_process(["ip", *argv, fh.name], timeout=_IP_TIMEOUT_S)
    return result.returncode, result.stdout


# --- pure parsing --------------------------------------------------------------------------
def parse_route(record: dict) -> Route:
    """A Route from one record of `ip -j route get` (or `route show`) output."""
    if not isinstance(record, dict):
        raise EngineError(f"unexpected route record from ip: {record!r}")
    gateway = record.get("gateway")
    src = record.get("prefsrc")
    try:
        return Route(
            type=record.get("type", "unicast"),
            dev=record.get("dev") or None,
            src=ipaddress.IPv4Address(src) if src else None,
            gateway=ipaddress.IPv4Address(gateway) if gateway else None,
            flags=tuple(record.get("flags") or ()),
        )
    except ValueError:
        raise EngineError(f"unexpected route record from ip: {record!r}") from None


def parse_route_batch(text: str) -> dict[Address, Route]:
    """`ip -j -batch` output of `route get` commands: one JSON array per line, keyed by dst.

    A command that failed prints nothing (its error goes to stderr), so the answers are
    matched by their "dst", not by position.
    """
    routes: dict[Address, Route] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            records = json.loads(line)
        except ValueError:
            raise EngineError(f"unexpected output from ip: {line[:200]!r}") from None
        for record in records:
            try:
                dst = ipaddress.IPv4Address(record["dst"])
            except (KeyError, TypeError, ValueError):
                raise EngineError(f"unexpected route record from ip: {record!r}") from None
            routes[dst] = parse_route(record)
    return routes


def prefixes(routes_json: str, rules_json: str = "[]") -> list[Network]:
    """Destination prefixes of `ip -4 -j route show table all` and `ip -4 -j rule show`."""
    found = []
    for record in json.loads(routes_json or "[]"):
        dst = record.get("dst", "default")
        if dst != "default":
            found.append(ipaddress.IPv4Network(dst, strict=False))
    for rule in json.loads(rules_json or "[]"):
        dst = rule.get("dst")
        if dst and dst != "all":
            found.append(ipaddress.IPv4Network(f"{dst}/{rule.get('dstlen', 32)}", strict=False))
    return found


def split(network: Network, inner: Iterable[Network]) -> list[Network]:
    """network cut into the fewest pieces that no prefix of inner is strictly inside of.

    Every address of such a piece matches the same route in every table (no more specific
    prefix starts inside it), so resolving one address resolves the piece.
    """
    inside = [p for p in inner if p.prefixlen > network.prefixlen and p.subnet_of(network)]
    if not inside:
        return [network]
    pieces: list[Network] = []
    for half in network.subnets(prefixlen_diff=1):
        pieces += split(half, inside)
    return pieces


def check_route(target: object, route: Route, *, interface: str | None = None) -> None:
    """Refuse a route masscan must not follow; the message names the target and the reason."""
    if route.type == NO_ROUTE:
        raise RouteRefused(f"{target}: no route to it; refusing to sweep it")
    if route.type in REFUSED_TYPES:
        raise RouteRefused(f"{target}: its route is {route.type}; refusing to sweep it")
    if route.type == "local" or route.dev == "lo":
        raise RouteRefused(
            f"{target} routes through lo (an address of this machine): masscan cannot scan it; "
            "use the connect engine"
        )
    if route.type not in ("unicast", "broadcast"):
        raise RouteRefused(f"{target}: its route is {route.type}; masscan sweeps unicast only")
    if not route.dev:
        raise RouteRefused(f"{target}: its route has no output interface")
    if "linkdown" in route.flags:
        # A cable or a VLAN may come back: the shard is retried, not failed at once.
        raise EngineError(f"{target}: its route's interface {route.dev} has no carrier")
    if route.src is None:
        raise RouteRefused(f"{target}: interface {route.dev} has no IPv4 source address")
    if interface is not None and route.dev != interface:
        raise RouteRefused(
            f"{target} leaves by {route.dev}, not by PORTMON_MASSCAN_ADAPTER={interface}; "
            "fix the setting or the route"
        )


def parse_neighbour(text: str) -> str | None:
    """The MAC of the first usable entry of `ip -j neigh show to IP dev DEV`, or None."""
    for entry in json.loads(text or "[]"):
        states = set(entry.get("state") or ())
        mac = (entry.get("lladdr") or "").lower()
        if _MAC.fullmatch(mac) and not states & _UNUSABLE_NEIGHBOUR:
            return mac
    return None


# --- the kernel's answers ------------------------------------------------------------------
def resolve(
    targets: Iterable[Network | Address], *, ip: IpRunner = default_ip
) -> list[tuple[Network, Network, Route]]:
    """(target, piece, route) for every piece of every target; refused routes raise."""
    networks = [ipaddress.IPv4Network(t) for t in targets]
    inner: list[Network] = []
    if any(n.prefixlen < 32 for n in networks):
        rc, routes_json = ip(["-4", "-j", "route", "show", "table", "all"], None)
        rc2, rules_json = ip(["-4", "-j", "rule", "show"], None)
        if rc or rc2:
            raise EngineError("cannot read the routing table (`ip -j route show table all`)")
        inner = prefixes(routes_json, rules_json)
    pieces = [(target, piece) for target in networks for piece in split(target, inner)]
    commands = "".join(f"route get {piece.network_address}\n" for _t, piece in pieces)
    # One ip process for all pieces: a shard of 10,000 single hosts is 10,000 lookups.
    _rc, out = ip(["-4", "-j", "-force", "-batch"], commands)
    answers = parse_route_batch(out)
    resolved = []
    for target, piece in pieces:
        route = answers.get(piece.network_address)
        if route is None:
            route = _failed_route(piece.network_address, ip=ip)
        resolved.append((target, piece, route))
    return resolved


def _failed_route(address: Address, *, ip: IpRunner) -> Route:
    """Why `ip route get` failed: the kernel answers blackhole etc. with an error only."""
    _rc, out = ip(["-4", "-j", "route", "show", "table", "all", "match", str(address)], None)
    refusing = []
    for record in json.loads(out or "[]"):
        kind = record.get("type", "unicast")
        dst = record.get("dst", "default")
        if kind in REFUSED_TYPES:
            length = 0 if dst == "default" else ipaddress.IPv4Network(dst, strict=False).prefixlen
            refusing.append((length, kind))
    kind = max(refusing)[1] if refusing else NO_ROUTE
    return Route(type=kind, dev=None, src=None, gateway=None)


def neighbour_mac(
    gateway: Address,
    interface: str,
    *,
    ip: IpRunner = default_ip,
    probe: Callable[[Address, str], None] | None = None,
    wait: float = NEIGHBOUR_WAIT_S,
) -> str | None:
    """The gateway's MAC from the neighbour table, probing it first if the entry is missing."""

    def lookup() -> str | None:
        _rc, out = ip(["-4", "-j", "neigh", "show", "to", str(gateway), "dev", interface], None)
        return parse_neighbour(out)

    mac = lookup()
    if mac:
        return mac
    (probe or probe_neighbour)(gateway, interface)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        time.sleep(_NEIGHBOUR_POLL_S)
        mac = lookup()
        if mac:
            return mac
    return None


def probe_neighbour(gateway: Address, interface: str) -> None:
    """One UDP datagram to the gateway's discard port, TTL 1: the kernel then ARPs for it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        # TTL 1: even a gateway that forwards does not pass it on.
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 1)
        with contextlib.suppress(OSError):  # needs CAP_NET_RAW; the route picks it anyway
            sock.setsockopt(socket.SOL_SOCKET, _SO_BINDTODEVICE, interface.encode())
        with contextlib.suppress(OSError):  # e.g. EHOSTUNREACH once ARP failed before
            sock.sendto(b"", (str(gateway), _DISCARD_PORT))


def interface_networks(interface: str, *, ip: IpRunner = default_ip) -> list[Network]:
    """The IPv4 subnets configured on interface; EngineError when the interface is missing."""
    rc, out = ip(["-4", "-j", "addr", "show", "dev", interface], None)
    if rc != 0:
        raise EngineError(f"interface {interface} is missing")
    networks = []
    for link in json.loads(out or "[]"):
        for info in link.get("addr_info") or ():
            if info.get("family") == "inet" and info.get("local"):
                networks.append(
                    ipaddress.IPv4Network(f"{info['local']}/{info.get('prefixlen', 32)}", False)
                )
    return networks


def plan(
    targets: Iterable[Network | Address],
    *,
    interface: str | None = None,
    source_ip: str | Address | None = None,
    router_mac: str | None = None,
    ip: IpRunner = default_ip,
    probe: Callable[[Address, str], None] | None = None,
) -> SweepPlan:
    """Group targets by route into masscan runs (routed) and connect-scanner work (on-link).

    interface / source_ip / router_mac are the PORTMON_MASSCAN_* overrides: the interface
    must be the route's, the source address must sit on one of its subnets (so that answers
    come back), and the router MAC is used only when the gateway's own cannot be resolved
    (a MAC that contradicts the neighbour table is refused). Raises EngineError, one line.
    """
    if interface is not None:
        interface_networks(interface, ip=ip)  # refuses a missing interface up front
    source = _source(source_ip)
    override_mac = _mac(router_mac)
    groups: dict[tuple[str, Address, Address], list[Network]] = {}
    result = SweepPlan()
    for target, piece, route in resolve(targets, ip=ip):
        whole = piece == target
        if route.type == "local":
            # This machine's own address (alone, as a shard can cut it, or inside a larger
            # target): masscan cannot reach it, the connect scanner can.
            result.connect.append(piece)
            continue
        label = _label(target) if whole else f"{_label(piece)} (in {target})"
        check_route(label, route, interface=interface)
        if route.gateway is None:
            # On-link, including the link's broadcast address: a target is every address
            # in it, and a connect to a broadcast address is refused at once (ENETUNREACH).
            result.connect.append(piece)
            continue
        # check_route refused a route without an interface or a source address.
        assert route.dev is not None and route.src is not None
        groups.setdefault((route.dev, route.src, route.gateway), []).append(piece)
    for (dev, src, gateway), pieces in groups.items():
        if source is not None and not any(source in n for n in interface_networks(dev, ip=ip)):
            raise EngineError(
                f"PORTMON_MASSCAN_ADAPTER_IP={source} is not on a subnet of {dev}, the "
                f"interface the route to {_label(pieces[0])} leaves by"
            )
        mac = neighbour_mac(gateway, dev, ip=ip, probe=probe)
        if mac and override_mac and mac != override_mac:
            raise EngineError(
                f"PORTMON_MASSCAN_ROUTER_MAC={override_mac} is not the MAC of {gateway}, the "
                f"gateway to {_label(pieces[0])} ({mac} in the neighbour table)"
            )
        mac = mac or override_mac
        if not mac:
            raise EngineError(
                f"cannot resolve the MAC of gateway {gateway} on {dev} (route to "
                f"{_label(pieces[0])}); set PORTMON_MASSCAN_ROUTER_MAC"
            )
        result.masscan.append(
            Egress(
                interface=dev,
                source_ip=source or src,
                gateway=gateway,
                router_mac=mac,
                targets=tuple(_collapse(pieces)),
            )
        )
    result.connect = _collapse(result.connect)
    return result


def _label(network: Network) -> str:
    return str(network.network_address) if network.prefixlen == 32 else str(network)


def _collapse(networks: list[Network]) -> list[Network]:
    return list(ipaddress.collapse_addresses(networks))


def _source(value: str | Address | None) -> Address | None:
    if value is None:
        return None
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise EngineError(f"PORTMON_MASSCAN_ADAPTER_IP={value!r} is not an IPv4 address") from None


def _mac(value: str | None) -> str | None:
    if value is None:
        return None
    mac = str(value).lower().replace("-", ":")
    if not _MAC.fullmatch(mac):
        raise EngineError(f"PORTMON_MASSCAN_ROUTER_MAC={value!r} is not a MAC address")
    return mac


def plan_json(sweep_plan: SweepPlan) -> dict:
    return {
        "masscan": [
            {
                "interface": egress.interface,
                "source_ip": str(egress.source_ip),
                "gateway": str(egress.gateway),
                "router_mac": egress.router_mac,
                "targets": [str(t) for t in egress.targets],
            }
            for egress in sweep_plan.masscan
        ],
        "connect": [str(t) for t in sweep_plan.connect],
    }


def refusal(resolved: Iterable[tuple[Network, Network, Route]]) -> str | None:
    """The first refusing route (blackhole, unreachable, prohibit, throw) among resolve()'s
    answers, as check_route words it; None when there is none. For a planner that may not
    be the scanner host: only what no route could ever make right."""
    for target, piece, route in resolved:
        if route.type in REFUSED_TYPES:
            label = _label(target) if piece == target else f"{_label(piece)} (in {target})"
            return f"{label}: its route is {route.type}; refusing to sweep it"
    return None


def plan_paths(plan: dict) -> dict[str, str]:
    """{target: "eth1 via 10.0.0.1" or "on-link"} from plan_json(): what a change is about.

    The router MAC is left out: it is looked up again on every attempt, and a gateway that
    swapped its NIC still is the same way out.
    """
    paths = {}
    for egress in plan.get("masscan", ()):
        for target in egress.get("targets", ()):
            paths[target] = f"{egress['interface']} via {egress['gateway']}"
    for target in plan.get("connect", ()):
        paths[target] = "on-link (connect scanner)"
    return paths


def plan_change(first: dict, now: dict) -> str | None:
    """One line saying how the route of a target moved between two plans, or None."""
    before, after = plan_paths(first), plan_paths(now)
    if before == after:
        return None
    moved = sorted(
        set(before) | set(after),
        key=lambda t: ipaddress.IPv4Network(t),
    )
    for target in moved:
        old, new = before.get(target), after.get(target)
        if old != new:
            return (
                f"route to {target} changed since the first attempt: "
                f"{old or 'not a target of its own'} -> {new or 'not a target of its own'}"
            )
    return None


def main(argv: list[str] | None = None) -> None:
    """Print the sweep plan of the targets in argv as JSON, or {"error": ...} and exit 1."""
    import argparse

    parser = argparse.ArgumentParser(prog="scanner.engines.routes")
    parser.add_argument("targets", nargs="+", help="IPv4 addresses or CIDRs")
    parser.add_argument("--interface", help="as PORTMON_MASSCAN_ADAPTER")
    parser.add_argument("--source-ip", help="as PORTMON_MASSCAN_ADAPTER_IP")
    parser.add_argument("--router-mac", help="as PORTMON_MASSCAN_ROUTER_MAC")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        targets = [ipaddress.IPv4Network(arg) for arg in args.targets]
        sweep_plan = plan(
            targets,
            interface=args.interface,
            source_ip=args.source_ip,
            router_mac=args.router_mac,
        )
    except (EngineError, ValueError) as exc:
        print(json.dumps({"error": str(exc)}))
        sys.exit(1)
    print(json.dumps(plan_json(sweep_plan)))
