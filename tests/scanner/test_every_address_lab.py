"""Hosts on block edges, found on-link (connect scanner) and routed (masscan), 0.5% loss.

The lab's hosts sit on the first and last addresses of the blocks a target is cut into:
/27 and /26 boundaries of the /24, the ends of an A-B range planned as .2/31, .4/30, .8/31.
On-link, the hosts share the scanner's /24 (the kernel's route has no gateway) and Portmon
scans them with its connect scanner; routed, masscan sweeps them. Each way of writing or
cutting the targets must find every port of every host inside them, and nothing else.
The scans run as a user runs them: `manage.py scan` through real workers.
"""

import ipaddress
import json
import subprocess
import sys

import pytest
from django.core.management import call_command

from scanner.models import ScanShard
from tests.conftest import ROOT
from tests.lab import Lab
from tests.scanner.test_lab_scan import without_masscan_overrides

# Last octets: block edges of the /24 at every size the planner cuts (/31 to /25).
EDGES = [2, 4, 7, 9, 31, 32, 63, 64, 95, 96, 127, 128, 191, 192, 223, 224, 253]
EXTRA_PORTS = "1-64"  # probed too: closed on every host, so a false open would show


def scan(env, targets, ports, *extra):
    result = subprocess.run(
        [sys.executable, "manage.py", "scan", *targets, "--ports", ports, "--json"]
        + ["--no-fingerprint", "--rate", "50000", "--timeout", "600", *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=660,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return {(row["ip"], row["port"]) for row in json.loads(result.stdout)}, result.stderr


def expected(lab, spec):
    inside = set()
    for token in spec:
        if "-" in token:
            lo, hi = (ipaddress.ip_address(t) for t in token.split("-"))
            inside |= {ip for ip in lab.truth if lo <= ipaddress.ip_address(ip) <= hi}
        else:
            inside |= {
                ip for ip in lab.truth if ipaddress.ip_address(ip) in ipaddress.ip_network(token)
            }
    return {(ip, port) for ip, port in lab.open_ports if ip in inside}


@pytest.mark.lab
@pytest.mark.celery
@pytest.mark.parametrize("on_link", [True, False], ids=["on-link", "routed"])
def test_every_address_of_every_target_is_scanned_block_edges_included(
    celery_workers, monkeypatch, on_link
):
    env = without_masscan_overrides(celery_workers, monkeypatch)
    with Lab(ports_per_host=(1, 3), loss=0.005, seed=24, on_link=on_link, offsets=EDGES) as lab:
        net = lab.cidr.rsplit(".", 1)[0]
        call_command("scope", "add", lab.cidr, "--zone", "internal")
        # Shards of 37 addresses each, so the /24 is cut at odd boundaries (7 shards).
        lab_ports = sorted({port for ports in lab.truth.values() for port in ports})
        ports = ",".join([EXTRA_PORTS, *(str(p) for p in lab_ports if p > 64)])
        n_ports = 64 + sum(1 for p in lab_ports if p > 64)
        shard_env = {"PORTMON_SHARD_PROBES": str(n_ports * 37)}
        celery_workers.start("sweep", "sweep.internal", extra_env=shard_env)
        celery_workers.start("default", "default", extra_env=shard_env)
        env.update(shard_env)

        specs = [
            [f"{net}.0/27"],  # a CIDR smaller than the link: .2 .4 .7 .9 .31
            [f"{net}.2-{net}.9"],  # planned as .2/31, .4/30, .8/31
            [f"{net}.64/26", f"{net}.190-{net}.224"],  # several shards, odd ends
            [lab.cidr],  # the whole link, cut into blocks of at most 37 addresses
        ]
        for spec in specs:
            found, stderr = scan(env, spec, ports)
            want = expected(lab, spec)
            missing, false = want - found, found - want
            assert not missing, f"{spec}: missed {sorted(missing)}"
            assert not false, f"{spec}: not open: {sorted(false)}"
            assert want, f"{spec}: the lab has no host there (a test that cannot fail)"

        # Which engine swept: the shards' route plans (on-link: connect scanner only).
        plans = list(ScanShard.objects.values_list("route_plan", flat=True))
        assert plans and all(plan for plan in plans)
        if on_link:
            assert all(not p["masscan"] and p["connect"] for p in plans), plans[:3]
        else:
            assert all(p["masscan"] and not p["connect"] for p in plans), plans[:3]
        assert sum(lab.egress_drops().values()) == 0
