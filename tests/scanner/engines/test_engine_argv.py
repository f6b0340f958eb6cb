"""The exact masscan and nmap command lines for representative sweeps and fingerprint runs.

Pinned so that a change to how options reach the adapters cannot change what runs: the
expected lists below were taken from the adapters before they took an options object
(SweepOptions, FingerprintOptions), and have not changed since.
"""

import ipaddress
import re
import time

import pytest

from scanner.engines import masscan, nmap, nmap_probes, routes
from scanner.engines.base import ProcessResult
from scanner.engines.options import MasscanOptions, SweepEvents, SweepOptions

N = ipaddress.ip_network
A = ipaddress.ip_address
EGRESS = routes.Egress(
    interface="pmtest0",
    source_ip=A("198.19.7.1"),
    gateway=A("198.19.7.2"),
    router_mac="02:00:00:00:07:02",
    targets=(N("198.18.7.0/24"), N("198.18.9.4/32")),
)
PLAN = routes.SweepPlan(masscan=[EGRESS])
# The adapters' private temporary directories (not nmap's shared data folder).
WORKDIR = re.compile(r"^/tmp/portmon-(masscan|nmap)-(?!data-)[^/]+")


@pytest.fixture
def recorded(monkeypatch):
    """The argv of every process the adapters start (none is started), workdirs as WORK."""
    argvs: list[list[str]] = []

    def fake_run(argv, **_kwargs):
        argvs.append([WORKDIR.sub("WORK", a) for a in argv])
        return ProcessResult(0, "", "", 0.0)

    monkeypatch.setattr(masscan, "run_process", fake_run)
    monkeypatch.setattr(masscan, "unavailable_reason", lambda: None)
    monkeypatch.setattr(masscan.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(nmap, "run_process", fake_run)
    monkeypatch.setattr(nmap.shutil, "which", lambda name: f"/usr/bin/{name}")
    return argvs


def masscan_sweep(answers=None, **overrides):
    knobs = {"rate": 5000, "retries": 2, "wait": 1}
    knobs.update({k: overrides.pop(k) for k in list(overrides) if k in knobs})
    fields = {
        "targets": [N("198.18.7.0/24"), A("198.18.9.4")],
        "ports": [(1, 1024), (8080, 8080), (1000, 2000)],
        "exclude": [N("198.18.7.128/25"), A("198.18.7.9"), N("2001:db8::/64")],
        "deadline": time.monotonic() + 60,
        "plan": PLAN,
        "masscan": MasscanOptions(**knobs),
        **overrides,
    }
    return masscan.sweep(SweepOptions(**fields), SweepEvents(answers=answers))


def test_a_tcp_sweep_that_streams_every_answer_runs_this_masscan(recorded):
    masscan_sweep(answers=lambda batch: None)

    assert recorded == [
        ["/usr/bin/masscan", "-p", "1-2000,8080", "--rate", "5000", "--retries", "2",
         "--wait", "1", "--excludefile", "WORK/exclude.txt", "--adapter", "pmtest0",
         "--adapter-ip", "198.19.7.1", "--router-mac", "02-00-00-00-07-02", "--interactive",
         "--show", "closed", "--range", "198.18.7.0/24", "--range", "198.18.9.4/32"],
    ]  # fmt: skip


def test_a_tcp_sweep_without_answers_writes_json_and_shows_open_ports_only(recorded):
    masscan_sweep(exclude=[], retries=0, wait=3)

    assert recorded == [
        ["/usr/bin/masscan", "-p", "1-2000,8080", "--rate", "5000", "--retries", "0",
         "--wait", "3", "-oJ", "WORK/out.json", "--adapter", "pmtest0",
         "--adapter-ip", "198.19.7.1", "--router-mac", "02-00-00-00-07-02", "--interactive",
         "--range", "198.18.7.0/24", "--range", "198.18.9.4/32"],
    ]  # fmt: skip


def test_a_udp_sweep_runs_masscan_with_udp_ports_and_our_requests(recorded):
    masscan_sweep(ports=[(53, 53), (161, 162)], proto="udp", answers=lambda batch: None)

    assert recorded == [
        ["/usr/bin/masscan", "-p", "U:53,U:161-162", "--rate", "5000", "--retries", "2",
         "--wait", "1", "-oJ", "WORK/out.json", "--excludefile", "WORK/exclude.txt",
         "--nmap-payloads", "WORK/payloads.txt", "--adapter", "pmtest0",
         "--adapter-ip", "198.19.7.1", "--router-mac", "02-00-00-00-07-02", "--interactive",
         "--range", "198.18.7.0/24", "--range", "198.18.9.4/32"],
    ]  # fmt: skip


def nmap_run(hosts=None, **options):
    hosts = hosts or {"127.0.0.4": [80, 22], "127.0.0.5": [443]}
    return nmap.fingerprint_many(
        hosts=hosts, options=nmap.FingerprintOptions(**{"timeout": 30, **options})
    )


def test_a_tcp_fingerprint_runs_this_nmap(recorded):
    nmap_run(null_wait_ms=nmap_probes.NMAP_NULL_WAIT_MS)

    assert recorded == [
        ["/usr/bin/nmap", "-sT", "-sV", "-Pn", "-n", "--min-hostgroup", "2",
         "--host-timeout", "30000ms", "-p", "22,80,443", "--version-trace",
         "-oX", "WORK/report.xml", "--", "127.0.0.4", "127.0.0.5"],
    ]  # fmt: skip


def test_a_udp_fingerprint_with_a_short_banner_wait_runs_this_nmap(recorded):
    datadir = str(nmap_probes.datadir({"NULL": 2000}))
    nmap_run(
        hosts={"::1": list(range(1000, 1030))},
        proto="udp",
        intensity=nmap.UDP_VERSION_INTENSITY,
        null_wait_ms=2000,
        timeout=12.5,
    )

    assert recorded == [
        ["/usr/bin/nmap", "-6", "-sU", "-sV", "-Pn", "-n", "--datadir", datadir,
         "--version-intensity", "2", "--min-parallelism", "30", "--min-hostgroup", "1",
         "--host-timeout", "12500ms", "-p", "1000-1029", "--version-trace",
         "-oX", "WORK/report.xml", "--", "::1"],
    ]  # fmt: skip


def test_an_nse_check_runs_this_nmap(recorded):
    assert nmap.build_argv(
        ip="127.0.0.5", ports=[6379], timeout=30, scripts=["redis-info", "ftp-anon"]
    ) == ["/usr/bin/nmap", "-sT", "-sV", "-Pn", "-n", "--script", "ftp-anon,redis-info",
          "--min-hostgroup", "1", "--host-timeout", "30000ms", "-p", "6379", "-oX", "-",
          "--", "127.0.0.5"]  # fmt: skip
