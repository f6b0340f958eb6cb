"""SweepOptions: checked once, when made; one interface, the engine picked by name."""

import ipaddress
from dataclasses import replace

import pytest

from scanner.engines import EngineError, connect, masscan, sweep_engine, udp
from scanner.engines.options import (
    CONNECT_PROBES,
    UDP_PROBES,
    MasscanOptions,
    ProbeOptions,
    SweepOptions,
)

N = ipaddress.ip_network
A = ipaddress.ip_address


def options(**overrides):
    return SweepOptions(**{"targets": [N("127.0.0.0/30")], "ports": [(22, 22)], **overrides})


@pytest.mark.parametrize(
    "overrides",
    [
        {"targets": ["127.0.0.1"]},
        {"targets": "127.0.0.1"},
        {"targets": []},
        {"ports": "22"},
        {"ports": [(0, 22)]},
        {"proto": "sctp"},
        {"exclude": ["127.0.0.2"]},
        {"deadline": "soon"},
        {"probes": {"timeout": 1}},
        {"masscan": {"rate": 100}},
        {"plan": "eth0"},
    ],
)
def test_it_refuses_anything_but_validated_values_when_made(overrides):
    with pytest.raises(EngineError):
        options(**overrides)


def test_a_variant_made_with_replace_is_checked_again():
    with pytest.raises(EngineError):
        replace(options(), targets=["127.0.0.1,--script,x"])
    with pytest.raises(EngineError):
        replace(MasscanOptions(), interface="eth0;id")


@pytest.mark.parametrize(
    "knobs",
    [{"timeout": 0}, {"timeout": 61}, {"retries": 11}, {"concurrency": 0}, {"retries": True}],
)
def test_it_refuses_prober_knobs_out_of_range(knobs):
    with pytest.raises(EngineError):
        ProbeOptions(**{"timeout": 1.0, "retries": 1, "concurrency": 10, **knobs})


def test_each_prober_has_its_own_defaults_unless_given():
    assert options().prober == CONNECT_PROBES
    assert options(proto="udp").prober == UDP_PROBES
    mine = ProbeOptions(timeout=0.5, retries=0, concurrency=10)
    assert options(proto="udp", probes=mine).prober == mine


def test_the_probers_get_the_targets_minus_the_exclusions():
    swept = options(
        targets=[N("127.0.0.0/29"), A("::1"), N("2001:db8::/126")],
        exclude=[N("127.0.0.4/30"), A("127.0.0.1"), A("2001:db8::2")],
    )

    probed = [str(a) for t in swept.probe_targets() for a in ipaddress.ip_network(t)]
    assert probed == [
        *["127.0.0.0", "127.0.0.2", "127.0.0.3"],
        *["::1", "2001:db8::", "2001:db8::1", "2001:db8::3"],
    ]
    # Without exclusions the targets go as given.
    assert options().probe_targets() == [N("127.0.0.0/30")]


def test_the_engine_is_picked_by_name_and_protocol():
    assert sweep_engine("masscan", "tcp") is masscan
    assert sweep_engine("masscan", "udp") is masscan
    assert sweep_engine("connect", "tcp") is connect
    assert sweep_engine("connect", "udp") is udp
    with pytest.raises(EngineError):
        sweep_engine("auto", "tcp")  # choose() resolves "auto" first


def test_a_prober_refuses_the_other_protocol():
    with pytest.raises(EngineError, match="UDP"):
        connect.sweep(options(proto="udp"))
    with pytest.raises(EngineError, match="TCP"):
        udp.sweep(options(proto="tcp"))
