"""Full-range scan of a lossy namespace lab through real workers: every port, right names."""

import pytest
from django.core.management import call_command

from scanner.models import Port, PortObservation, RunState
from scanner.services.runs import run_start
from tests.lab import Lab
from tests.test_pipeline import wait_run


@pytest.mark.lab
@pytest.mark.celery
def test_it_finds_every_open_port_under_loss_and_names_the_services(celery_workers):
    with Lab(hosts=30, ports_per_host=(2, 5), loss=0.005, seed=7) as lab:
        call_command("scope", "add", lab.cidr, "--zone", "internal")
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
            for p in Port.objects.select_related("host")
            if p.service != lab.truth[p.host.ip][p.port]
        ]
        assert not wrong, f"fingerprints that differ from the banners: {wrong}"
