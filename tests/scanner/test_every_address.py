"""A target means every address in it: the whole path, property-tested.

Random target specs (CIDRs of any size and alignment, A-B ranges, single addresses, IPv6)
and random exclusions go through what a run does: parse -> scope guard -> shard plan ->
each shard's stored text -> the worker's guard -> the engine's probe list. The union of the
addresses the engines would probe, over all shards, must equal the expanded targets minus
the exclusions: exactly, for the connect engine and for masscan (whose route plan sends
on-link pieces and this machine's own address to the connect scanner).

The generator aims at the edges the old code lost: blocks the planner cuts at odd
boundaries, ranges that start or end on a block edge, tiny shards, the scanner's own
address alone in a shard, the link's broadcast address.
"""

import ipaddress
import random

import pytest

from scanner.engines import connect, masscan, routes
from scanner.engines.options import MasscanOptions, SweepOptions
from scanner.scope import Scope
from scanner.targets import format_targets, guard, parse_ports, parse_targets, plan_shards
from tests.scanner.test_routes import GATEWAYS, FakeIp, no_probe

# The FakeIp namespace: 198.18.250.0/24 on-link (this machine is .1, .255 the broadcast),
# 198.18.251.0/24 routed (its upper /25 through another gateway by an ip rule),
# 198.19.250.0/24 on-link on a second interface.
IPV4_SCOPE = ["198.18.250.0/23", "198.19.250.0/24"]
IPV6_SCOPE = ["2001:db8:7::/120"]
PORT = parse_ports("80")
CASES = 400


def _no_resolve(name):
    raise AssertionError(f"no names in this test: {name}")


def _random_piece(rng: random.Random, scope: ipaddress._BaseNetwork) -> tuple[str, set]:
    """One target token inside scope and the addresses it means."""
    size = scope.num_addresses
    kind = rng.choice(["cidr", "cidr", "range", "range", "address"])
    if kind == "address":
        address = scope.network_address + rng.randrange(size)
        return str(address), {address}
    if kind == "range":
        first = rng.randrange(size)
        last = min(size - 1, first + rng.choice([0, 1, 2, 5, 7, 30, 31, 64, 100, 200]))
        lo, hi = scope.network_address + first, scope.network_address + last
        return f"{lo}-{hi}", {lo + i for i in range(last - first + 1)}
    prefix = rng.randint(scope.prefixlen, scope.max_prefixlen)
    block = 1 << (scope.max_prefixlen - prefix)
    start = rng.randrange(size // block) * block
    network = ipaddress.ip_network((int(scope.network_address) + start, prefix))
    return str(network), set(network)


def random_case(rng: random.Random, *, ipv6: bool):
    """(target tokens, exclusions, expected addresses, max probes per shard)."""
    scopes = [ipaddress.ip_network(c) for c in IPV4_SCOPE + (IPV6_SCOPE if ipv6 else [])]
    tokens, wanted = [], set()
    for _ in range(rng.randint(1, 4)):
        token, addresses = _random_piece(rng, rng.choice(scopes))
        tokens.append(token)
        wanted |= addresses
    exclusions = []
    for _ in range(rng.choice([0, 0, 1, 2, 3])):
        scope = rng.choice(scopes)
        prefix = rng.randint(max(scope.prefixlen + 2, scope.max_prefixlen - 5), scope.max_prefixlen)
        block = 1 << (scope.max_prefixlen - prefix)
        start = rng.randrange(scope.num_addresses // block) * block
        exclusions.append(ipaddress.ip_network((int(scope.network_address) + start, prefix)))
    excluded = {a for a in wanted if any(a.version == e.version and a in e for e in exclusions)}
    # Shards from one address each to the whole target: cut at every odd boundary.
    max_probes = rng.choice([1, 2, 3, 7, 13, 64, 100, 1000])
    return tokens, exclusions, wanted - excluded, max_probes


def worker_targets(tokens, exclusions, max_probes):
    """The guarded targets of each shard, as a worker sees them (from the stored text)."""
    scope = Scope.from_cidrs(
        {c: "internal" for c in IPV4_SCOPE + IPV6_SCOPE}, [str(e) for e in exclusions]
    )
    planned = guard(parse_targets(tokens, resolver=_no_resolve), scope)
    for shard in plan_shards(planned, PORT, max_probes=max_probes):
        stored = format_targets(shard.targets)
        yield guard(parse_targets(stored, resolver=_no_resolve), scope)


def connect_probed(targets) -> set:
    """The addresses connect.sweep would send probes to for these targets."""
    host_ranges = connect._host_ranges(list(targets))
    return {ipaddress.ip_address(ip) for _f, ip, _p in connect._probes(host_ranges, list(PORT))}


def masscan_probed(guarded) -> set:
    """The addresses masscan.sweep would probe: its masscan runs' --range minus the exclude
    file, and the on-link jobs it hands to the connect scanner."""
    plan = routes.plan(list(guarded.networks), ip=FakeIp(neighbours=GATEWAYS), probe=no_probe)
    excluded = list(guarded.exclusions)
    probed = set()
    for networks, egress in masscan.sweep_jobs(plan, excluded):
        if egress is None:
            probed |= connect_probed(networks)
            continue
        argv = masscan.build_argv(
            targets=networks,
            ports=PORT,
            options=MasscanOptions(),
            output_path=None,
            exclude_path="/x",
        )
        ranges = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--range"]
        for text in ranges:
            probed |= {
                a
                for a in ipaddress.ip_network(text)
                if not any(a.version == e.version and a in e for e in excluded)
            }
    return probed


@pytest.mark.parametrize("seed", range(CASES))
def test_the_connect_engine_probes_exactly_the_targets_minus_exclusions(seed):
    rng = random.Random(seed)
    tokens, exclusions, wanted, max_probes = random_case(rng, ipv6=True)
    if not wanted:
        pytest.skip("every address excluded (the planner refuses; tested elsewhere)")

    probed = set()
    for guarded in worker_targets(tokens, exclusions, max_probes):
        # shard_sweep's connect path: the shard's networks minus its exclusions.
        options = SweepOptions(targets=guarded.networks, ports=PORT, exclude=guarded.exclusions)
        probed |= connect_probed(options.probe_targets())

    assert sorted(wanted - probed) == [], f"never probed: {tokens} minus {exclusions}"
    assert sorted(probed - wanted) == [], f"probed outside: {tokens} minus {exclusions}"


@pytest.mark.parametrize("seed", range(CASES))
def test_masscan_probes_exactly_the_targets_minus_exclusions(seed):
    rng = random.Random(10_000 + seed)
    tokens, exclusions, wanted, max_probes = random_case(rng, ipv6=False)
    if not wanted:
        pytest.skip("every address excluded (the planner refuses; tested elsewhere)")

    probed = set()
    for guarded in worker_targets(tokens, exclusions, max_probes):
        probed |= masscan_probed(guarded)

    assert sorted(wanted - probed) == [], f"never probed: {tokens} minus {exclusions}"
    assert sorted(probed - wanted) == [], f"probed outside: {tokens} minus {exclusions}"


@pytest.mark.parametrize(
    ("spec", "edges"),
    [
        # The examples: a /27 of a /24 link, and a range planned as .2/31, .4/30, .8/31.
        ("198.18.250.0/27", ["198.18.250.0", "198.18.250.31"]),
        ("198.18.250.2-198.18.250.9", ["198.18.250.4", "198.18.250.7"]),
        ("198.18.250.0/24", ["198.18.250.63", "198.18.250.64", "198.18.250.127"]),
    ],
)
def test_block_edges_of_on_link_targets_are_probed(spec, edges):
    guarded = next(worker_targets([spec], [], max_probes=1 << 20))
    probed = masscan_probed(guarded)

    assert {ipaddress.ip_address(e) for e in edges} <= probed
