"""Targets and ports: a strict grammar, refused in one line before any resolver or engine."""

import ipaddress

import pytest
from django.urls import reverse
from django.utils.html import escape

from scanner.models import ScanPolicy
from scanner.scope import Scope
from scanner.targets import TargetError, guard, parse_ports, parse_targets

SCOPE = Scope.from_cidrs({"198.18.0.0/24": "internal"}, ["198.18.0.16/28"])


def no_resolver(name):
    pytest.fail(f"{name!r} reached the resolver")


def refused(text, match=""):
    with pytest.raises(TargetError, match=match) as exc:
        parse_targets(text, resolver=no_resolver)
    assert "\n" not in str(exc.value)
    return str(exc.value)


@pytest.mark.parametrize(
    "target",
    [
        "0x7f.0.0.1",
        "0177.0.0.1",
        "127.1",
        "127.0.1",
        "2130706433",
        "0x7f000001",
        "127.0.0.01",
        "127.0.0.1.",
        "1.2.3.0x4",
        "host.123",
        "host.0x1f",
        "\uff11\uff12\uff17.0.0.1",  # full-width digits
        "127\uff0e0.0.1",  # full-width dot
        "b\u00fccher.example",
        "fe80::1%eth0",
        "127.0.0.0/08",
        "127.0.0.0/255.0.0.0",
        "::1/0128",
        "198.18.0.1-20",
        "198.18.0.20-198.18.0.1",
        "198.18.0.1-::1",
        "198.18.0.1-198.18.0.2-198.18.0.3",
    ],
)
def test_it_refuses_numeric_shortcuts_and_odd_forms_before_the_resolver(target):
    refused(target)


def test_it_says_how_to_write_an_ipv4_address():
    assert "four decimal numbers" in refused("0x7f.0.0.1")
    assert "198.18.0.1-198.18.0.20" in refused("198.18.0.1-20")
    assert "reversed" in refused("198.18.0.20-198.18.0.1")


def test_it_resolves_real_host_names():
    asked = []

    def resolver(name):
        asked.append(name)
        return ["198.18.0.7"]

    nets = parse_targets(["db.lab", "localhost", "web-1.example.com."], resolver=resolver)
    assert asked == ["db.lab", "localhost", "web-1.example.com."]
    assert nets == [ipaddress.ip_network("198.18.0.7/32")]


def test_it_turns_address_ranges_into_networks_under_the_same_guard():
    nets = parse_targets("198.18.0.1-198.18.0.20", resolver=no_resolver)
    assert [str(n) for n in nets] == [
        "198.18.0.1/32",
        "198.18.0.2/31",
        "198.18.0.4/30",
        "198.18.0.8/29",
        "198.18.0.16/30",
        "198.18.0.20/32",
    ]
    guarded = guard(nets, SCOPE)
    # 198.18.0.16-20 sit in the exclusion: skipped, the rest scanned.
    assert [str(a) for a in guarded.addresses()] == [f"198.18.0.{i}" for i in range(1, 16)]
    with pytest.raises(TargetError, match="excluded"):
        guard(parse_targets("198.18.0.17-198.18.0.30", resolver=no_resolver), SCOPE)
    # As for a range's pieces, a wholly excluded target next to others is skipped.
    kept = guard(parse_targets("198.18.0.5,198.18.0.20", resolver=no_resolver), SCOPE)
    assert kept.networks == (ipaddress.ip_network("198.18.0.5/32"),)
    with pytest.raises(TargetError, match="outside the configured scope"):
        guard(parse_targets("198.18.0.250-198.18.1.3", resolver=no_resolver), SCOPE)
    six = parse_targets("2001:db8::1-2001:db8::2", resolver=no_resolver)
    assert six == [ipaddress.ip_network("2001:db8::1/128"), ipaddress.ip_network("2001:db8::2/128")]


def test_it_keeps_accepting_addresses_and_cidrs():
    nets = parse_targets("198.18.0.0/25, 198.18.0.200 2001:db8::/126", resolver=no_resolver)
    assert [str(n) for n in nets] == ["198.18.0.0/25", "198.18.0.200/32", "2001:db8::/126"]


@pytest.mark.parametrize(
    "ports, expected",
    [
        ("22", ((22, 22),)),
        ("1-1024", ((1, 1024),)),
        ("443,80,22", ((22, 22), (80, 80), (443, 443))),
        ("80, 81 ,1-10", ((1, 10), (80, 81))),
        (" 65535 ", ((65535, 65535),)),
    ],
)
def test_it_reads_the_port_grammar(ports, expected):
    assert parse_ports(ports) == expected


@pytest.mark.parametrize(
    "ports",
    [
        "1,2,,3",
        "22,",
        ",22",
        "22 80",
        "\uff12\uff12",  # full-width 22
        "2\u0662",  # Arabic-Indic digit
        "+22",
        "0",
        "0-10",
        "65536",
        "1-65536",
        "100-10",
        "022",
        "1 - 10",
        "22\n80",
    ],
)
def test_it_refuses_bad_port_lists_in_one_line(ports):
    with pytest.raises(TargetError) as exc:
        parse_ports(ports)
    assert "\n" not in str(exc.value)


@pytest.mark.django_db
@pytest.mark.parametrize("targets", ["127.1", "0177.0.0.1", "198.18.0.1-20"])
def test_it_shows_the_same_refusal_in_the_policy_admin(admin_client, targets):
    response = admin_client.post(
        reverse("admin:scanner_scanpolicy_add"),
        {
            "name": "nightly",
            "targets": targets,
            "ports": "22",
            "rate": "1000",
            "engine": "connect",
            "zone": "internal",
            "fingerprint": "on",
            "schedule": "",
            "enabled": "on",
            "created_at_0": "2026-11-21",
            "created_at_1": "10:00:00",
        },
    )
    assert response.status_code == 200  # the form again, with the parser's message
    assert escape(refused(targets)) in response.content.decode()
    assert not ScanPolicy.objects.exists()
