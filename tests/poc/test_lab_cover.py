"""Verification is not news: exposures present at a network's first scan get their PoC
verdict (a baseline raises no event, so chaining alone never checked them), quietly; an
import is offline and probes nothing unless asked (--poc)."""

import re
import subprocess
import time
from io import StringIO

import pytest
from django.core.management import call_command

from alerts.models import AlertEvent, EventKind
from poc.models import PocCheck, PocResult
from scanner.models import RunState
from scanner.services.runs import run_start
from tests.alerts.nmapxml import nmap_xml
from tests.lab import Lab
from tests.poc.daemons import Daemon
from tests.poc.test_lab_chain import wait_for
from tests.scanner.test_pipeline import wait_run

PORT = 16379  # not on the high-risk list: at a first scan, no event at all


def redis(lab: Lab, ip: str, tmp_path, *, password: str = "") -> Daemon:
    argv = ["redis-server", "--bind", ip, "--port", str(PORT), "--save", "", "--appendonly",
            "no", "--dir", str(tmp_path)]  # fmt: skip
    argv += ["--requirepass", password] if password else ["--protected-mode", "no"]
    return Daemon(lab.namespace, argv, ip, PORT, tmp_path / f"redis-{ip}.log").start()


def connections(lab: Lab, ip: str) -> int:
    """Connections the Redis at ip has accepted (this query is one of them)."""
    out = subprocess.run(
        ["ip", "netns", "exec", lab.namespace, "redis-cli", "-h", ip, "-p", str(PORT),
         "INFO", "stats"],
        capture_output=True, text=True, timeout=10, check=True,
    ).stdout  # fmt: skip
    return int(out.split("total_connections_received:")[1].split()[0])


@pytest.mark.lab
@pytest.mark.celery
def test_a_first_scan_s_exposures_get_their_verdicts_quietly(celery_workers, tmp_path):
    tmp_path.chmod(0o755)
    env = {"PORTMON_POC_CHECK_TIMEOUT": "5"}
    with Lab(hosts=2, ports_per_host=(0, 0), seed=25) as lab:
        open_ip, protected_ip = lab.hosts
        daemons = [
            redis(lab, open_ip, tmp_path),
            redis(lab, protected_ip, tmp_path, password="s3cret-pw"),
        ]
        try:
            call_command("scope", "add", lab.cidr, "--zone", "internal", stdout=StringIO())
            celery_workers.start("sweep", "sweep.internal", extra_env=env)
            celery_workers.start("general", "fingerprint,default", 2, extra_env=env)
            celery_workers.start("poc", "poc", extra_env=env)

            run = run_start(targets=[open_ip, protected_ip], ports=str(PORT), engine="connect")
            assert wait_run(run.pk, 120).state == RunState.FINISHED
            results = wait_for(
                lambda: (lambda r: r if len(r) == 2 else None)(list(PocResult.objects.all())),
                120, "two PoC verdicts",
            )  # fmt: skip
        finally:
            for daemon in daemons:
                daemon.stop()
        assert sum(lab.egress_drops().values()) == 0

    run.refresh_from_db()
    assert run.baseline and run.baseline[0]["ports"] == 2  # the network's first scan
    # No event from the scan itself: the first scan is a baseline.
    assert not AlertEvent.objects.exclude(kind=EventKind.POC_FINDING).exists()
    verdicts = {r.host.ip: r for r in results}
    assert verdicts[open_ip].vulnerable and verdicts[open_ip].check_name == "redis_noauth"
    assert not verdicts[protected_ip].vulnerable
    assert {r.run.reason for r in results} == {"cover"}
    [finding] = AlertEvent.objects.filter(kind=EventKind.POC_FINDING)
    assert finding.host.ip == open_ip and finding.port == PORT


@pytest.mark.lab
@pytest.mark.celery
def test_an_import_probes_nothing_unless_asked(celery_workers, tmp_path):
    tmp_path.chmod(0o755)
    env = {"PORTMON_POC_CHECK_TIMEOUT": "5"}
    with Lab(hosts=1, ports_per_host=(0, 0), seed=26) as lab:
        [ip] = lab.hosts
        daemon = redis(lab, ip, tmp_path)
        try:
            call_command("scope", "add", lab.cidr, "--zone", "internal", stdout=StringIO())
            celery_workers.start("general", "default", extra_env=env)
            celery_workers.start("poc", "poc", extra_env=env)
            path = tmp_path / "scan.xml"
            hosts = {ip: [(PORT, "redis", "Redis key-value store")]}
            path.write_text(
                nmap_xml(targets=ip, ports=str(PORT), hosts=hosts, start=int(time.time()))
            )

            before = connections(lab, ip)
            out = StringIO()
            call_command("scan_import", str(path), "--wait", "--wait-timeout", "60", stdout=out)
            assert "no PoC check probes these ports" in out.getvalue()
            # --wait printed what the worker's diff raised: the network's first run.
            assert re.search(
                r"diff of run \d+: no events; baseline: 1 ports on 1 hosts", out.getvalue()
            )
            time.sleep(5)  # what a chained or covering check would take to start
            assert connections(lab, ip) == before + 1  # only our own query
            assert not PocCheck.objects.exists()

            # The same file with --poc: the check connects and gives its verdict.
            call_command("scan_import", str(path), "--wait", "--poc", stdout=StringIO())
            result = wait_for(lambda: PocResult.objects.first(), 60, "a PoC verdict")
            assert connections(lab, ip) > before + 2
        finally:
            daemon.stop()
        assert sum(lab.egress_drops().values()) == 0
    assert result.vulnerable and result.host.ip == ip
