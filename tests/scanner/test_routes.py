"""Route resolution for masscan from recorded `ip -j` answers (no network, no root)."""

import ipaddress
import json

import pytest

from scanner.engines import EngineError, routes

net = ipaddress.ip_network
addr = ipaddress.ip_address

# What iproute2 6.1 prints, recorded in a namespace with a routed lab behind veth a0,
# an on-link subnet on b0 and a blackhole.
ROUTE_TABLE = [
    {"dst": "default", "gateway": "198.19.9.2", "dev": "a0", "flags": []},
    {"dst": "198.18.250.0/24", "dev": "a0", "scope": "link", "prefsrc": "198.18.250.1"},
    {"dst": "198.18.251.0/24", "gateway": "198.18.250.2", "dev": "a0", "flags": []},
    {"type": "blackhole", "dst": "198.18.252.0/24", "flags": []},
    {"dst": "198.19.250.0/24", "dev": "b0", "scope": "link", "prefsrc": "198.19.250.1"},
    {"type": "local", "dst": "198.18.250.1", "dev": "a0", "table": "local"},
    {"type": "broadcast", "dst": "198.18.250.255", "dev": "a0", "table": "local"},
]
RULES = [
    {"priority": 0, "src": "all", "table": "local"},
    {"priority": 100, "src": "all", "dst": "198.18.251.128", "dstlen": 25, "table": "vpn"},
]


def route_for(address):
    """The kernel's answer to `ip route get` in that namespace (None: the call fails)."""
    ip = addr(address)
    if ip in net("198.18.252.0/24"):
        return None
    if ip == addr("198.18.250.1"):
        return {"type": "local", "dst": str(ip), "dev": "lo", "prefsrc": str(ip)}
    if ip == addr("198.18.250.255"):
        return {"type": "broadcast", "dst": str(ip), "dev": "a0", "prefsrc": "198.18.250.1"}
    if ip in net("198.18.251.128/25"):  # the rule sends these through the VPN table
        return {"dst": str(ip), "gateway": "198.18.250.3", "dev": "a0", "prefsrc": "198.18.250.1"}
    if ip in net("198.18.251.0/24"):
        return {"dst": str(ip), "gateway": "198.18.250.2", "dev": "a0", "prefsrc": "198.18.250.1"}
    if ip in net("198.18.250.0/24"):
        return {"dst": str(ip), "dev": "a0", "prefsrc": "198.18.250.1", "flags": []}
    if ip in net("198.19.250.0/24"):
        return {"dst": str(ip), "dev": "b0", "prefsrc": "198.19.250.1", "flags": []}
    return None


class FakeIp:
    """Answers `ip` like the kernel of that namespace; records every command."""

    def __init__(self, neighbours=None, addresses=None):
        self.calls = []
        self.neighbours = neighbours or {}
        self.addresses = addresses or {"a0": ["198.18.250.1/24"], "b0": ["198.19.250.1/24"]}

    def __call__(self, argv, batch=None):
        argv = list(argv)
        self.calls.append((argv, batch))
        if argv[-1] == "-batch":
            lines = []
            for command in batch.splitlines():
                answer = route_for(command.split()[-1])
                if answer:
                    lines.append(json.dumps([answer]))
            return (1 if len(lines) < len(batch.splitlines()) else 0), "\n".join(lines)
        if argv[2:5] == ["route", "show", "table"] and "match" in argv:
            ip = addr(argv[-1])
            return 0, json.dumps(
                [r for r in ROUTE_TABLE if r.get("type") and ip in net(r["dst"], strict=False)]
            )
        if argv[2:5] == ["route", "show", "table"]:
            return 0, json.dumps(ROUTE_TABLE)
        if argv[2:4] == ["rule", "show"]:
            return 0, json.dumps(RULES)
        if argv[2:4] == ["neigh", "show"]:
            mac = self.neighbours.get(argv[5])
            entry = {"dst": argv[5], "dev": argv[7], "lladdr": mac, "state": ["REACHABLE"]}
            return 0, json.dumps([entry] if mac else [])
        if argv[2:4] == ["addr", "show"]:
            if argv[-1] not in self.addresses:
                return 1, ""
            info = [
                {"family": "inet", "local": a.split("/")[0], "prefixlen": int(a.split("/")[1])}
                for a in self.addresses[argv[-1]]
            ]
            return 0, json.dumps([{"ifname": argv[-1], "addr_info": info}])
        raise AssertionError(f"unexpected ip command {argv}")


GATEWAYS = {"198.18.250.2": "02:aa:00:00:00:02", "198.18.250.3": "02:aa:00:00:00:03"}


def no_probe(gateway, interface):
    raise AssertionError(f"probed {gateway} on {interface}: the neighbour was known")


def test_it_reads_interface_source_and_gateway_from_ip_route_get():
    out = (
        '[{"dst":"198.18.251.5","gateway":"198.18.250.2","dev":"a0","prefsrc":"198.18.250.1",'
        '"flags":[],"uid":0,"cache":[]}]\n'
        '[{"dst":"198.18.250.7","dev":"a0","prefsrc":"198.18.250.1","flags":[],"uid":0}]\n'
    )

    parsed = routes.parse_route_batch(out)

    assert parsed == {
        addr("198.18.251.5"): routes.Route(
            "unicast", "a0", addr("198.18.250.1"), addr("198.18.250.2")
        ),
        addr("198.18.250.7"): routes.Route("unicast", "a0", addr("198.18.250.1"), None),
    }


def test_it_splits_a_network_at_every_more_specific_prefix_inside_it():
    pieces = routes.split(net("198.18.0.0/22"), [net("198.18.0.0/16"), net("198.18.2.0/24")])

    assert pieces == [net("198.18.0.0/23"), net("198.18.2.0/24"), net("198.18.3.0/24")]


def test_it_groups_targets_by_route_and_sends_on_link_ones_to_the_connect_scanner():
    ip = FakeIp(neighbours=GATEWAYS)

    plan = routes.plan(
        [net("198.18.251.0/24"), net("198.18.250.0/24"), net("198.19.250.16/28")],
        ip=ip,
        probe=no_probe,
    )

    assert [
        (e.interface, str(e.source_ip), str(e.gateway), e.router_mac) for e in plan.masscan
    ] == [
        ("a0", "198.18.250.1", "198.18.250.2", "02:aa:00:00:00:02"),
        ("a0", "198.18.250.1", "198.18.250.3", "02:aa:00:00:00:03"),
    ]
    # The ip rule for the upper half of 198.18.251.0/24 sends it to another gateway.
    assert [e.targets for e in plan.masscan] == [
        (net("198.18.251.0/25"),),
        (net("198.18.251.128/25"),),
    ]
    # On-link hosts: every address, this machine's own .1 (connects reach it) and the
    # link's broadcast (one probe, refused at once) included.
    assert plan.connect == [net("198.18.250.0/24"), net("198.19.250.16/28")]
    # One ip process resolves every piece, whatever their number.
    assert sum(1 for argv, _ in ip.calls if "-batch" in argv) == 1


def test_it_names_the_refusing_route_of_a_target_the_kernel_will_not_route():
    with pytest.raises(EngineError) as info:
        routes.plan([net("198.18.252.0/25")], ip=FakeIp(neighbours=GATEWAYS), probe=no_probe)

    assert str(info.value) == "198.18.252.0/25: its route is blackhole; refusing to sweep it"


def test_it_refuses_a_target_without_any_route():
    with pytest.raises(EngineError, match=r"^198\.51\.100\.7: no route to it; refusing"):
        routes.plan([net("198.51.100.7/32")], ip=FakeIp(), probe=no_probe)


def test_it_gives_this_machines_own_address_as_a_whole_target_to_the_connect_scanner():
    # A shard can be cut down to one address, the scanner's own: masscan cannot reach it.
    plan = routes.plan([net("198.18.250.1/32")], ip=FakeIp(), probe=no_probe)

    assert plan.masscan == [] and plan.connect == [net("198.18.250.1/32")]


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"type": "unreachable"}, "its route is unreachable"),
        ({"type": "prohibit"}, "its route is prohibit"),
        ({"type": "throw"}, "its route is throw"),
        ({"type": "multicast", "dev": "a0", "prefsrc": "198.18.250.1"}, "unicast only"),
        ({"prefsrc": "198.18.250.1"}, "has no output interface"),
        ({"dev": "a0", "prefsrc": "198.18.250.1", "flags": ["linkdown"]}, "has no carrier"),
        ({"dev": "a0"}, "has no IPv4 source address"),
        ({"dev": "lo", "prefsrc": "127.0.0.1"}, "routes through lo"),
    ],
)
def test_it_refuses_routes_masscan_must_not_follow(record, message):
    with pytest.raises(EngineError, match=message):
        routes.check_route("198.18.9.0/24", routes.parse_route(record))


def test_it_refuses_an_override_interface_that_is_not_the_routes():
    with pytest.raises(EngineError) as info:
        routes.plan([net("198.18.251.0/25")], interface="b0", ip=FakeIp(neighbours=GATEWAYS))

    assert str(info.value) == (
        "198.18.251.0/25 leaves by a0, not by PORTMON_MASSCAN_ADAPTER=b0; fix the setting or "
        "the route"
    )


def test_it_refuses_an_override_interface_that_does_not_exist():
    with pytest.raises(EngineError, match="^interface eth7 is missing$"):
        routes.plan([net("198.18.251.0/25")], interface="eth7", ip=FakeIp(neighbours=GATEWAYS))


def test_it_accepts_overrides_that_agree_with_the_route():
    plan = routes.plan(
        [net("198.18.251.0/25")],
        interface="a0",
        source_ip="198.18.250.9",  # a spare address of a0's subnet, as masscan's docs advise
        router_mac="02-AA-00-00-00-02",
        ip=FakeIp(neighbours=GATEWAYS),
        probe=no_probe,
    )

    [egress] = plan.masscan
    assert (egress.interface, str(egress.source_ip), egress.router_mac) == (
        "a0",
        "198.18.250.9",
        "02:aa:00:00:00:02",
    )


def test_it_refuses_an_override_source_address_off_the_routes_interface():
    with pytest.raises(EngineError, match="ADAPTER_IP=198.19.250.1 is not on a subnet of a0"):
        routes.plan(
            [net("198.18.251.0/25")],
            source_ip="198.19.250.1",
            ip=FakeIp(neighbours=GATEWAYS),
            probe=no_probe,
        )


def test_it_refuses_an_override_mac_that_contradicts_the_neighbour_table():
    with pytest.raises(EngineError, match="ROUTER_MAC=02:bb:00:00:00:01 is not the MAC of"):
        routes.plan(
            [net("198.18.251.0/25")],
            router_mac="02:bb:00:00:00:01",
            ip=FakeIp(neighbours=GATEWAYS),
            probe=no_probe,
        )


def test_it_probes_an_unknown_gateway_and_then_reads_its_mac():
    ip = FakeIp()
    probed = []

    def probe(gateway, interface):
        probed.append((str(gateway), interface))
        ip.neighbours["198.18.250.2"] = "02:aa:00:00:00:02"  # the ARP reply came in

    plan = routes.plan([net("198.18.251.0/25")], ip=ip, probe=probe)

    assert probed == [("198.18.250.2", "a0")]
    assert plan.masscan[0].router_mac == "02:aa:00:00:00:02"


def test_it_refuses_a_gateway_whose_mac_cannot_be_resolved(monkeypatch):
    monkeypatch.setattr(routes, "NEIGHBOUR_WAIT_S", 0.1)

    with pytest.raises(EngineError, match="cannot resolve the MAC of gateway 198.18.250.2 on a0"):
        routes.plan([net("198.18.251.0/25")], ip=FakeIp(), probe=lambda gateway, interface: None)


@pytest.mark.parametrize(
    ("entries", "mac"),
    [
        ([{"lladdr": "02:AA:00:00:00:02", "state": ["STALE"]}], "02:aa:00:00:00:02"),
        ([{"lladdr": "02:aa:00:00:00:02", "state": ["PERMANENT"]}], "02:aa:00:00:00:02"),
        ([{"state": ["INCOMPLETE"]}], None),
        ([{"lladdr": "02:aa:00:00:00:02", "state": ["FAILED"]}], None),
        ([], None),
    ],
)
def test_it_uses_only_neighbour_entries_with_a_usable_mac(entries, mac):
    assert routes.parse_neighbour(json.dumps(entries)) == mac
