"""--engine auto: masscan where it can work, the connect scanner everywhere else."""

import ipaddress

import pytest

from scanner.engines import EngineError, choose, masscan, privileges

LAB = ipaddress.ip_network("198.18.5.0/24")


@pytest.fixture
def masscan_ready(monkeypatch):
    monkeypatch.setattr(masscan, "unavailable_reason", lambda: None)


@pytest.fixture
def masscan_missing(monkeypatch):
    monkeypatch.setattr(masscan, "unavailable_reason", lambda: privileges.NEEDS_NET_RAW)


def test_it_picks_masscan_for_ipv4_networks_when_it_can_run(masscan_ready):
    assert choose("auto", [LAB, ipaddress.ip_address("198.18.6.1")]) == "masscan"


@pytest.mark.parametrize(
    "target",
    [
        ipaddress.ip_address("127.0.0.2"),
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("96.0.0.0/3"),  # contains loopback: masscan would skip it
        ipaddress.ip_address("::1"),
        ipaddress.ip_network("2001:db8::/64"),
    ],
)
def test_it_falls_back_to_connect_for_loopback_and_ipv6(masscan_ready, target):
    assert choose("auto", [LAB, target]) == "connect"


def test_it_falls_back_to_connect_without_root_or_masscan(masscan_missing):
    assert choose("auto", [LAB]) == "connect"


def test_it_honours_an_explicit_connect():
    assert choose("connect", [LAB]) == "connect"


def test_it_refuses_an_explicit_masscan_that_cannot_work(masscan_ready, masscan_missing):
    with pytest.raises(EngineError, match="masscan needs CAP_NET_RAW: run the sweep worker"):
        choose("masscan", [LAB])


def test_it_refuses_an_explicit_masscan_for_loopback(masscan_ready):
    with pytest.raises(EngineError, match="loopback or IPv6"):
        choose("masscan", [ipaddress.ip_address("127.0.0.2")])


@pytest.mark.parametrize("engine", ["nmap", "", "masscan --echo", None])
def test_it_refuses_unknown_engines(engine):
    with pytest.raises(EngineError, match="unknown engine"):
        choose(engine, [LAB])


def test_it_refuses_unvalidated_targets():
    with pytest.raises(EngineError):
        choose("auto", ["1.2.3.4,--script,x"])


@pytest.mark.lab
def test_it_says_masscan_is_available_here_as_root():
    # This machine runs the tests as root with masscan installed (see COMMON.md).
    assert masscan.available()
