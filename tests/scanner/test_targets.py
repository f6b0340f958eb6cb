"""Target/port parsing, the scope guard and shard planning: pure logic, no network."""

import ipaddress

import pytest

from scanner.scope import Scope
from scanner.targets import (
    TargetError,
    count_ports,
    format_ports,
    guard,
    parse_ports,
    parse_targets,
    plan_shards,
)

SCOPE = Scope.from_cidrs(
    {"198.18.0.0/24": "internal", "198.19.0.0/24": "external", "127.0.0.0/8": "internal"},
    ["198.18.0.128/25"],
)


def test_it_parses_and_merges_port_ranges():
    assert parse_ports("443, 80,22,1-1024,1025-2000") == ((1, 2000),)
    assert format_ports(parse_ports("8080,22,8081")) == "22,8080-8081"
    assert count_ports(parse_ports("1-65535")) == 65535


@pytest.mark.parametrize("bad", ["", "0", "65536", "80-22", "http", "1-2-3", "-p1", "22;id"])
def test_it_rejects_bad_ports(bad):
    with pytest.raises(TargetError):
        parse_ports(bad)


@pytest.mark.parametrize(
    "bad",
    ["1.2.3.4,--script,x", "-oN/tmp/x", ";id", "$(id)", "a b`id`", "198.18.0.1/24", "12345"],
)
def test_it_rejects_injection_attempts_before_any_command_line(bad):
    def resolver(name):  # never reached for these: the token is rejected first
        raise AssertionError(f"tried to resolve {name}")

    with pytest.raises(TargetError):
        parse_targets(bad, resolver=resolver)


def test_it_resolves_host_names_and_keeps_them_in_scope():
    inside = parse_targets("db.lab", resolver=lambda name: ["198.18.0.7"])
    assert guard(inside, SCOPE).networks == (ipaddress.ip_network("198.18.0.7/32"),)
    outside = parse_targets("evil.lab", resolver=lambda name: ["198.18.0.7", "198.20.0.1"])
    with pytest.raises(TargetError, match="198.20.0.1/32 is outside the configured scope"):
        guard(outside, SCOPE)


def test_it_carries_exclusions_and_refuses_wholly_excluded_targets():
    g = guard(parse_targets("198.18.0.0/24"), SCOPE)
    assert g.exclusions == (ipaddress.ip_network("198.18.0.128/25"),)
    assert g.address_count == 128
    assert all(a < ipaddress.ip_address("198.18.0.128") for a in g.addresses())
    with pytest.raises(TargetError, match="excluded"):
        guard(parse_targets("198.18.0.200"), SCOPE)
    with pytest.raises(TargetError, match="outside"):
        guard(parse_targets("198.18.0.0/23"), SCOPE)


def test_it_plans_shards_that_cover_every_probe_once():
    g = guard(parse_targets("198.18.0.0/26"), SCOPE)
    ports = parse_ports("1-65535")
    shards = plan_shards(g, ports, max_probes=4 * 65535)
    assert len(shards) == 16
    assert sum(s.probes for s in shards) == 64 * 65535
    covered = {a for s in shards for net in s.targets for a in net}
    assert covered == set(ipaddress.ip_network("198.18.0.0/26"))
    # One host with more ports than a shard holds is split by port range.
    split = plan_shards(guard(parse_targets("127.0.0.2"), SCOPE), ports, max_probes=20000)
    assert [s.ports[0][0] for s in split] == [1, 20001, 40001, 60001]
    assert sum(s.probes for s in split) == 65535
