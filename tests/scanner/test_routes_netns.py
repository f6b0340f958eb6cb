"""Route resolution against a real kernel: a namespace with two veths, a blackhole and more.

The resolver runs inside the namespace (`ip netns exec`), where the only neighbours are the
gateways of a second namespace; nothing here is connected to the root namespace.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.lab

SETUP = """\
link add a0 type veth peer name a1 netns {gw}
link add b0 type veth peer name b1 netns {gw}
addr add 198.18.240.1/24 dev a0
addr add 198.19.240.1/24 dev b0
link set lo up
link set a0 up
link set b0 up
route add 198.18.241.0/24 via 198.18.240.2 dev a0
route add 198.18.242.0/24 via 198.19.240.2 dev b0
route add blackhole 198.18.243.0/24
route add unreachable 198.18.244.0/24
route add prohibit 198.18.245.0/24
route add throw 198.18.246.0/24
"""
GATEWAYS = """\
addr add 198.18.240.2/24 dev a1
addr add 198.19.240.2/24 dev b1
link set lo up
link set a1 up
link set b1 up
"""


def ip(*argv, stdin=None):
    return subprocess.run(
        ["ip", *argv], input=stdin, capture_output=True, text=True, timeout=30, check=True
    ).stdout


@pytest.fixture(scope="module")
def netns():
    """(namespace, {interface: its gateway's MAC}); removed afterwards."""
    name, gw = f"pmroute-{os.getpid()}", f"pmroute-{os.getpid()}-gw"
    try:
        ip("netns", "add", name)
        ip("netns", "add", gw)
        ip("-n", name, "-batch", "-", stdin=SETUP.format(gw=gw))
        ip("-n", gw, "-batch", "-", stdin=GATEWAYS)
        macs = {
            mine: json.loads(ip("-j", "-n", gw, "link", "show", peer))[0]["address"]
            for mine, peer in (("a0", "a1"), ("b0", "b1"))
        }
        yield name, macs
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", gw], capture_output=True, check=False)


PLAN = "from scanner.engines.routes import main; main()"


def plan_in(namespace, *args):
    out = subprocess.run(
        ["ip", "netns", "exec", namespace, sys.executable, "-c", PLAN, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.stderr == "", out.stderr
    return json.loads(out.stdout)


def test_it_gives_each_interface_its_own_masscan_with_the_gateways_real_mac(netns):
    namespace, macs = netns

    plan = plan_in(namespace, "198.18.241.0/24", "198.18.242.0/25", "198.18.242.200")

    # The gateways were not in the neighbour tables: the resolver made the kernel ARP.
    assert plan == {
        "masscan": [
            {
                "interface": "a0",
                "source_ip": "198.18.240.1",
                "gateway": "198.18.240.2",
                "router_mac": macs["a0"],
                "targets": ["198.18.241.0/24"],
            },
            {
                "interface": "b0",
                "source_ip": "198.19.240.1",
                "gateway": "198.19.240.2",
                "router_mac": macs["b0"],
                "targets": ["198.18.242.0/25", "198.18.242.200/32"],
            },
        ],
        "connect": [],
    }


def test_it_splits_a_target_that_spans_an_on_link_subnet_and_a_routed_one(netns):
    namespace, macs = netns

    plan = plan_in(namespace, "198.18.240.0/23")

    assert [(m["interface"], m["router_mac"], m["targets"]) for m in plan["masscan"]] == [
        ("a0", macs["a0"], ["198.18.241.0/24"])
    ]
    # The on-link half goes to the connect scanner, never to a gateway's MAC: all of it,
    # its first and last address included (a target is every address in it).
    assert plan["connect"] == ["198.18.240.0/24"]


@pytest.mark.parametrize(
    ("target", "error"),
    [
        ("198.18.243.0/24", "198.18.243.0/24: its route is blackhole; refusing to sweep it"),
        ("198.18.244.9", "198.18.244.9: its route is unreachable; refusing to sweep it"),
        ("198.18.245.0/26", "198.18.245.0/26: its route is prohibit; refusing to sweep it"),
        ("198.18.246.1", "198.18.246.1: its route is throw; refusing to sweep it"),
        ("198.18.247.1", "198.18.247.1: no route to it; refusing to sweep it"),
        (
            "198.18.242.0/23",
            "198.18.243.0/24 (in 198.18.242.0/23): its route is blackhole; refusing to sweep it",
        ),
    ],
)
def test_it_refuses_targets_whose_route_is_not_a_way_out(netns, target, error):
    assert plan_in(netns[0], target) == {"error": error}


def test_it_gives_this_machines_own_address_to_the_connect_scanner(netns):
    # A shard can be cut down to the scanner's own address alone: masscan cannot reach it.
    assert plan_in(netns[0], "198.18.240.1") == {"masscan": [], "connect": ["198.18.240.1/32"]}


def test_it_refuses_an_override_interface_that_the_route_does_not_use(netns):
    plan = plan_in(netns[0], "198.18.241.0/24", "--interface", "b0")

    assert plan == {
        "error": "198.18.241.0/24 leaves by a0, not by PORTMON_MASSCAN_ADAPTER=b0; fix the "
        "setting or the route"
    }


def test_it_refuses_an_override_interface_that_does_not_exist(netns):
    assert plan_in(netns[0], "198.18.241.0/24", "--interface", "eth9") == {
        "error": "interface eth9 is missing"
    }


def test_it_refuses_a_gateway_that_does_not_answer(netns):
    namespace = netns[0]
    ip("-n", namespace, "route", "add", "198.18.248.0/24", "via", "198.18.240.77", "dev", "a0")

    plan = plan_in(namespace, "198.18.248.0/24")

    assert plan == {
        "error": "cannot resolve the MAC of gateway 198.18.240.77 on a0 (route to "
        "198.18.248.0/24); set PORTMON_MASSCAN_ROUTER_MAC"
    }
