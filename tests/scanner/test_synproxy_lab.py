"""A lab host that answers SYN-ACK on every port (the kernel's SYN proxy), swept by masscan
through real workers with no PORTMON_MASSCAN_* variables: one host-level finding."""

import time

import pytest
from django.core.management import call_command

from alerts.models import AlertEvent
from scanner.models import HostFinding, Port, PortObservation, RunState, ScanRun
from scanner.services.runs import run_start
from tests.lab import Lab
from tests.scanner.test_lab_scan import without_masscan_overrides
from tests.scanner.test_pipeline import wait_run


def wait_diffed(run_id: int, seconds: float) -> ScanRun:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        run = ScanRun.objects.get(pk=run_id)
        if run.diffed_at is not None:
            return run
        time.sleep(0.3)
    raise AssertionError(f"run {run_id} not diffed after {seconds}s")


@pytest.mark.lab
@pytest.mark.celery
def test_it_reports_a_syn_proxy_host_once_and_still_finds_the_real_ports(
    celery_workers, monkeypatch
):
    without_masscan_overrides(celery_workers, monkeypatch)
    with Lab(hosts=4, ports_per_host=(2, 3), loss=0, seed=5) as lab:
        proxy = lab.add_answer_all_host()
        call_command("scope", "add", lab.cidr, "--zone", "internal")
        celery_workers.start("sweep", "sweep.internal")
        celery_workers.start("fp", "fingerprint,default", concurrency=4)

        run = run_start(
            targets=[*lab.hosts, proxy], ports="1-65535", rate=300_000, engine="masscan"
        )
        run = wait_run(run.pk, 300)
        assert run.state == RunState.FINISHED, run.error
        run = wait_diffed(run.pk, 120)

        finding = HostFinding.objects.get(run=run)
        assert finding.host.ip == proxy and finding.kind == "answers_all_ports"
        assert finding.probed == 65535 and finding.open_count > 60000
        # Not one of its ports recorded, so none fingerprinted (nmap runs on observations).
        assert not PortObservation.objects.filter(host__ip=proxy).exists()
        assert not Port.objects.filter(host__ip=proxy).exists()
        events = list(AlertEvent.objects.filter(host__ip=proxy).values_list("kind", "port"))
        assert events == [("host_answers_all", 0)]
        event = AlertEvent.objects.get(host__ip=proxy)
        assert event.detail["summary"].endswith(
            "of 65,535 ports probed: SYN proxy, tarpit or middlebox; ports not listed"
        )

        # The real hosts beside it: every port found and named.
        found = set(PortObservation.objects.filter(run=run).values_list("host__ip", "port"))
        assert found == lab.open_ports
        named = {(p.host.ip, p.port): p.service for p in Port.objects.select_related("host")}
        assert named == {(ip, port): lab.truth[ip][port] for ip, port in lab.open_ports}
        assert "masscan took" in celery_workers.log("sweep")
        assert sum(lab.egress_drops().values()) == 0
