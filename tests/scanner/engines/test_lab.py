"""Engines against a namespace lab in 198.18.0.0/15 (root, ip netns, nftables, masscan, nmap).

Every probe here goes to the lab's own hosts (lab.hosts / lab.cidr), nothing else.
"""

import ipaddress
import time
from dataclasses import replace

import pytest

from scanner.engines import EngineError, EngineTimeout, connect, masscan, nmap
from scanner.findings import Finding
from tests.lab import Lab
from tests.scanner.engines.conftest import cmdline, masscan_args, masscan_pids, sweep_args

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab():
    with Lab(hosts=4, ports_per_host=(2, 4), loss=0.0, seed=3) as running:
        yield running


def lab_options(lab):
    return {"interface": lab.interface, "source_ip": lab.source_ip, "router_mac": lab.router_mac}


def lab_ports(lab):
    """1-2000 plus every open port of the lab: a full-range sweep would take minutes."""
    return [(1, 2000)] + sorted({(port, port) for _ip, port in lab.open_ports})


def leftover_masscans(lab):
    return [pid for pid in masscan_pids() if lab.interface in cmdline(pid)]


def test_it_sweeps_the_lab_and_finds_every_open_port(lab):
    progress, streamed = [], []

    # No adapter options: the kernel's route to the lab picks interface, source and MAC.
    found = masscan.sweep(
        *masscan_args(
            targets=[ipaddress.ip_address(ip) for ip in lab.hosts],
            ports=lab_ports(lab),
            rate=20000,
            timeout=120,
            wait=2,
            on_progress=lambda percent, count: progress.append((percent, count)),
            on_finding=lambda finding: streamed.append((time.monotonic(), finding)),
        )
    )
    finished = time.monotonic()

    assert {(f.ip, f.port) for f in found} == lab.open_ports
    # Each hit was handed over once, as it came, not all at the end.
    assert {f.key for _, f in streamed} == {f.key for f in found}
    assert len(streamed) == len(found)
    assert streamed[0][0] < finished - 2  # masscan waits >= 2 s after its last probe
    assert progress[-1] == (100.0, len(lab.open_ports))
    percents = [p for p, _ in progress]
    assert percents == sorted(percents) and len(percents) > 2
    assert leftover_masscans(lab) == []


def test_it_leaves_excluded_hosts_alone(lab):
    skipped = lab.hosts[0]

    found = masscan.sweep(
        *masscan_args(
            targets=[ipaddress.ip_network(lab.cidr)],  # the whole /24, minus one host
            ports=sorted({(port, port) for _ip, port in lab.open_ports}),
            rate=20000,
            exclude=[ipaddress.ip_network(f"{skipped}/32")],
            timeout=120,
            wait=1,
            **lab_options(lab),
        )
    )

    assert {(f.ip, f.port) for f in found} == {(ip, p) for ip, p in lab.open_ports if ip != skipped}


def test_it_refuses_adapter_settings_that_contradict_the_route(lab):
    with pytest.raises(EngineError, match=f"leaves by {lab.interface}, not by .*=lo;"):
        masscan.sweep(
            *masscan_args(
                targets=[ipaddress.ip_address(lab.hosts[0])],
                ports=[(1, 10)],
                rate=1000,
                timeout=30,
                interface="lo",
            )
        )
    assert leftover_masscans(lab) == []


def test_it_kills_masscan_on_timeout_and_leaves_no_process(lab):
    started = time.monotonic()
    with pytest.raises(EngineTimeout) as info:
        # 256 hosts x 65535 ports at 500 pps would take 9 hours.
        masscan.sweep(
            *masscan_args(
                targets=[ipaddress.ip_network(lab.cidr)],
                ports=[(1, 65535)],
                rate=500,
                timeout=3,
                **lab_options(lab),
            )
        )

    assert time.monotonic() - started < 10
    assert isinstance(info.value.partial, list)
    assert leftover_masscans(lab) == []


def test_it_fingerprints_lab_hosts_like_their_banners_say(lab):
    for ip in lab.hosts:
        result = nmap.fingerprint(
            ip=ip, ports=sorted(lab.truth[ip]), options=nmap.FingerprintOptions(timeout=60)
        )

        assert result.status == "up", result.error
        got = {
            f.port: {"service": f.service, "product": f.product, "version": f.version}
            for f in result.findings
        }
        assert got == {port: lab.fingerprint(ip, port) for port in lab.truth[ip]}


def test_it_confirms_masscan_hits_with_a_connect_and_drops_the_false_ones(lab):

    real = [Finding(ip, port) for ip, port in sorted(lab.open_ports)]
    ghost = Finding(lab.hosts[0], 1999)  # not open in the lab (ports are >= 21 and planned)
    assert (ghost.ip, ghost.port) not in lab.open_ports

    confirmed = connect.verify(
        real + [ghost], replace(connect.VERIFY_PROBES, timeout=1.0, retries=1)
    )

    assert set(confirmed) == set(real)


def test_it_connect_scans_the_lab(lab):
    found = connect.sweep(
        *sweep_args(
            targets=[ipaddress.ip_address(ip) for ip in lab.hosts],
            ports=lab_ports(lab),
            timeout=1.0,
        )
    )

    assert {(f.ip, f.port) for f in found} == lab.open_ports


def test_it_retries_probes_lost_on_the_wire(lab):
    # Loss drops SYNs entering the lab, so a lost probe is a timeout: exactly what retries
    # are for. Odds of a flaky result: 0.5**14 without retries, 14 * 0.1**5 with them.
    real = [Finding(ip, port) for ip, port in sorted(lab.open_ports)]
    try:
        lab.set_loss(0.5)
        once = connect.verify(real, replace(connect.VERIFY_PROBES, timeout=0.3, retries=0))
        lab.set_loss(0.1)
        retried = connect.verify(real, replace(connect.VERIFY_PROBES, timeout=0.3, retries=4))
    finally:
        lab.set_loss(0.0)

    assert len(once) < len(real)
    assert set(retried) == set(real)
