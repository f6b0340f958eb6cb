"""A fingerprint task: claims a run's waiting ports, runs nmap over batches, completes the run."""

import pytest
from django.utils import timezone

from scanner.engines import nmap
from scanner.findings import Finding
from scanner.models import PortObservation, RunState, ScanRun
from scanner.services import runs
from scanner.services.results import observations_record


@pytest.mark.django_db
def test_a_task_fingerprints_every_batch_and_completes_the_run(services, monkeypatch):
    ssh = services.start("ssh", "127.0.0.4")
    http = services.start("http", "127.0.0.6")
    run = ScanRun.objects.create(targets="127.0.0.0/24", state=RunState.FINGERPRINTING)
    observations_record(
        run_id=run.pk,
        findings=[Finding("127.0.0.4", ssh), Finding("127.0.0.6", http)],
        seen_at=timezone.now(),
    )
    # One nmap run per host, as for hosts too big to share one: both must still be done.
    planned = []
    monkeypatch.setattr(
        nmap, "batches", lambda hosts: planned.extend({ip: p} for ip, p in hosts.items()) or planned
    )

    assert runs.fingerprint_run_hosts(run_id=run.pk, ips=["127.0.0.4", "127.0.0.6"]) == 2

    assert planned == [{"127.0.0.4": [ssh]}, {"127.0.0.6": [http]}]
    named = PortObservation.objects.filter(run=run).values_list("host__ip", "service", "product")
    assert sorted(named) == [("127.0.0.4", "ssh", "OpenSSH"), ("127.0.0.6", "http", "nginx")]
    run.refresh_from_db()
    assert run.state == RunState.FINISHED
    # A second task for the same hosts finds nothing left to claim.
    assert runs.fingerprint_run_hosts(run_id=run.pk, ips=["127.0.0.4", "127.0.0.6"]) == 0
