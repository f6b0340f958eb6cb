"""Full-range scan of a lossy namespace lab through real workers: every port, right names.

No test here sets PORTMON_MASSCAN_*: masscan's interface, source and router MAC come from
the kernel's route to the lab (scanner.engines.routes), as on a fresh install.
"""

import json
import subprocess
import sys
import time

import pytest
from django.core.management import call_command

from scanner.models import PortObservation, RunState, ScanShard, ShardState
from scanner.services.runs import run_start
from tests.conftest import ROOT
from tests.lab import Lab
from tests.scanner.test_pipeline import wait_run

MASSCAN_OVERRIDES = (
    "PORTMON_MASSCAN_ADAPTER",
    "PORTMON_MASSCAN_ADAPTER_IP",
    "PORTMON_MASSCAN_ROUTER_MAC",
)


def without_masscan_overrides(workers, monkeypatch) -> dict[str, str]:
    """Workers (and the returned env, for commands) as on a fresh install: no adapter set."""
    for name in MASSCAN_OVERRIDES:
        workers.env.pop(name, None)
        monkeypatch.delenv(name, raising=False)
    return dict(workers.env)


@pytest.mark.lab
@pytest.mark.celery
def test_it_scans_the_lab_with_manage_py_scan_and_no_adapter_settings(celery_workers, monkeypatch):
    env = without_masscan_overrides(celery_workers, monkeypatch)
    with Lab(hosts=30, ports_per_host=(2, 5), loss=0.005, seed=11) as lab:
        call_command("scope", "add", lab.cidr, "--zone", "internal")
        celery_workers.start("sweep", "sweep.internal")
        celery_workers.start("fp", "fingerprint,default", concurrency=6)

        scan = subprocess.run(
            [sys.executable, "manage.py", "scan", *lab.hosts, "--engine", "masscan"]
            + ["--rate", "300000", "--json", "--timeout", "600"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=660,
        )

        assert scan.returncode == 0, scan.stderr[-3000:]
        found = {(row["ip"], row["port"]) for row in json.loads(scan.stdout)}
        missing, false = lab.open_ports - found, found - lab.open_ports
        assert not missing, f"missed {len(missing)} of {len(lab.open_ports)}: {sorted(missing)}"
        assert not false, f"{len(false)} ports that are not open: {sorted(false)[:20]}"
        assert "masscan took" in celery_workers.log("sweep")  # masscan swept, not a fallback
        assert sum(lab.egress_drops().values()) == 0


@pytest.mark.lab
@pytest.mark.celery
def test_it_finds_every_open_port_under_loss_and_names_the_services(celery_workers):
    with Lab(hosts=30, ports_per_host=(2, 5), loss=0.005, seed=7) as lab:
        call_command("scope", "add", lab.cidr, "--zone", "internal")
        # The overrides, set to what the route says anyway: accepted, not refused.
        env = {
            "PORTMON_MASSCAN_ADAPTER": lab.interface,
            "PORTMON_MASSCAN_ADAPTER_IP": lab.source_ip,
            "PORTMON_MASSCAN_ROUTER_MAC": lab.router_mac,
        }
        celery_workers.start("sweep", "sweep.internal", extra_env=env)
        celery_workers.start("fp", "fingerprint,default", concurrency=6, extra_env=env)
        run = run_start(targets=lab.hosts, ports="1-65535", rate=300_000, engine="masscan")
        run = wait_run(run.pk, 600)
        assert run.state == RunState.FINISHED and not run.degraded, run.error
        found = set(PortObservation.objects.filter(run=run).values_list("host__ip", "port"))
        missing = lab.open_ports - found
        assert not missing, f"missed {len(missing)} of {len(lab.open_ports)}: {sorted(missing)}"
        assert found == lab.open_ports
        wrong = [
            (p.host.ip, p.port, p.service, lab.truth[p.host.ip][p.port])
            for p in PortObservation.objects.filter(run=run).select_related("host")
            if p.service != lab.truth[p.host.ip][p.port]
        ]
        assert not wrong, f"fingerprints that differ from the banners: {wrong}"


@pytest.mark.lab
@pytest.mark.celery
def test_it_leaves_no_masscan_behind_when_a_shard_overruns_its_time_limit(
    celery_workers, monkeypatch
):
    without_masscan_overrides(celery_workers, monkeypatch)
    with Lab(hosts=4, ports_per_host=(2, 3), loss=0, seed=3) as lab:
        call_command("scope", "add", lab.cidr, "--zone", "internal")
        # The sweep worker's own limits apply (none travel in the message).
        env = {
            "PORTMON_SHARD_MAX_ATTEMPTS": "2",
            "PORTMON_SHARD_SOFT_TIME_LIMIT": "4",
            "PORTMON_SHARD_TIME_LIMIT": "5",
        }
        celery_workers.start("sweep", "sweep.internal", extra_env=env)
        # 4 hosts x 65535 ports at 1000 pps would take minutes: the limit cuts it short.
        # No fingerprinting: only a sweep worker runs here, and a port found before the kill
        # would otherwise wait for nmap.
        run = run_start(
            targets=lab.hosts, ports="1-65535", rate=1000, engine="masscan", fingerprint=False
        )
        run = wait_run(run.pk, 120)
        shard = ScanShard.objects.get(run=run)
        assert shard.state == ShardState.FAILED and shard.attempts == 2
        assert run.degraded
        assert "time limit (4s) exceeded" in celery_workers.log("sweep").lower()
        time.sleep(1)
        masscans = subprocess.run(["pgrep", "-af", "masscan"], capture_output=True, text=True)
        assert lab.interface not in masscans.stdout, masscans.stdout
