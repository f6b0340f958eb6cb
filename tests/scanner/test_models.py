"""Model constraints the rest of the system relies on."""

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from scanner.findings import Finding
from scanner.models import Host, Port, PortObservation, ScanRun
from scanner.services.results import run_import


@pytest.mark.django_db
def test_it_keeps_one_current_state_row_per_host_proto_port():
    host = Host.objects.create(ip="198.18.0.10")
    Port.objects.create(host=host, proto="tcp", port=22)
    Port.objects.create(host=host, proto="udp", port=22)  # another protocol is another row
    with pytest.raises(IntegrityError), transaction.atomic():
        Port.objects.create(host=host, proto="tcp", port=22)
    assert Port.objects.filter(host=host).count() == 2


@pytest.mark.django_db
def test_it_keeps_one_observation_per_run_and_port():
    host = Host.objects.create(ip="198.18.0.10")
    run = ScanRun.objects.create(targets="198.18.0.10")
    PortObservation.objects.create(run=run, host=host, port=80)
    with pytest.raises(IntegrityError), transaction.atomic():
        PortObservation.objects.create(run=run, host=host, port=80)


@pytest.mark.django_db
def test_it_counts_sightings_and_keeps_first_and_last_seen_in_order(diff_on_finish):
    day = timezone.now().replace(microsecond=0)
    one = timezone.timedelta(days=1)
    run_import(findings=[Finding("198.18.0.10", 80, service="http")], at=day)
    # A back-filled older import must not move last_seen backwards.
    run_import(findings=[Finding("198.18.0.10", 80), Finding("198.18.0.10", 22)], at=day - one)
    run_import(findings=[Finding("198.18.0.10", 80, service="mysql")], at=day + one)
    http = Port.objects.get(port=80)
    assert (http.first_seen, http.last_seen, http.seen_count) == (day - one, day + one, 3)
    assert http.service == "mysql"
    ssh = Port.objects.get(port=22)
    assert (ssh.first_seen, ssh.last_seen, ssh.seen_count) == (day - one, day - one, 1)
    assert Host.objects.get().last_seen == day + one
