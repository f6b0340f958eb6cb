"""Hosts that answer on all ports: the verdict, the held stream, the diff and the digest."""

import pytest

from alerts.models import AlertEvent, EventKind
from alerts.notify.content import Item
from alerts.services.diff import run_diff
from scanner import sweep, synproxy
from scanner.findings import Finding
from scanner.models import Host, HostFinding, Port, PortObservation, ScanRun
from scanner.services import publish
from scanner.services.results import host_answering_all_record
from tests.alerts.conftest import BACKGROUND, DAY0, HOST, NET, at, import_run, lab_network

__all__ = ["lab_network"]  # the timeline network fixture, used below

DEFAULT = synproxy.Threshold(min_ports=1000, min_share=0.05)


@pytest.mark.parametrize(
    ("open_count", "probed", "verdict"),
    [
        (65535, 65535, True),
        (4213, 65535, True),  # a tarpit that answers on some ports only
        (3000, 65535, False),  # 4.6% of a full range: a busy host, not a proxy
        (1001, 10000, True),
        (1000, 1000, False),  # every port of a 1,000-port scan: not above 1,000
        (200, 200, False),
    ],
)
def test_it_calls_a_host_a_syn_proxy_only_above_both_limits(open_count, probed, verdict):
    assert synproxy.answers_all(open_count=open_count, probed=probed, threshold=DEFAULT) is verdict


def test_it_splits_off_the_hosts_that_answer_on_all_ports():
    real = [Finding("198.18.0.2", port) for port in (22, 80, 443)]
    proxy = [Finding("198.18.0.9", port) for port in range(1, 5001)]

    split = synproxy.split(real + proxy, probed=65535, threshold=DEFAULT)

    assert split.kept == real
    assert split.answering_all == {"198.18.0.9": 5000}
    assert synproxy.summary(open_count=5000, probed=65535) == (
        "5,000 of 65,535 ports probed: SYN proxy, tarpit or middlebox; ports not listed"
    )


@pytest.fixture
def queued(monkeypatch):
    calls = []
    monkeypatch.setattr(publish, "fingerprints_publish", lambda *, run_id, ips: calls.append(ips))
    return calls


def test_it_streams_a_real_host_but_holds_one_that_answers_syn_ack_everywhere(db, queued):
    run = ScanRun.objects.create(targets="198.18.0.0/24")
    stream = sweep.FindingStream(run_id=run.pk, fingerprint=True, threshold=DEFAULT)
    # A real host: RSTs on most ports, one open among them.
    stream.answered([("198.18.0.2", port) for port in range(1000, 1200)])
    stream(Finding("198.18.0.2", 22))
    # A SYN proxy: every answer is a SYN-ACK.
    for port in range(1, 300):
        stream.answered([("198.18.0.9", port)])
        stream(Finding("198.18.0.9", port))
    stream.flush()

    recorded = set(PortObservation.objects.filter(run=run).values_list("host__ip", "port"))
    assert recorded == {("198.18.0.2", 22)}
    assert queued == [["198.18.0.2"]]  # nmap never hears of the proxy


def test_it_drops_ports_recorded_before_the_verdict(db):
    run = ScanRun.objects.create(targets="198.18.0.0/24")
    from scanner.services.results import observations_record

    observations_record(run_id=run.pk, findings=[Finding("198.18.0.9", 22)], seen_at=DAY0)

    host_answering_all_record(
        run_id=run.pk, answering_all={"198.18.0.9": 65000}, probed=65535, at=DAY0
    )
    host_answering_all_record(  # a redelivered shard adds nothing
        run_id=run.pk, answering_all={"198.18.0.9": 65000}, probed=65535, at=DAY0
    )

    assert not PortObservation.objects.filter(run=run).exists()
    assert HostFinding.objects.filter(run=run).count() == 1


def test_it_raises_one_event_per_proxy_host_and_never_closes_its_ports(lab_network):
    host_ports = [Finding(HOST, 22, service="ssh"), Finding(HOST, 8080, service="http")]
    for day in range(3):
        run_diff(
            run_id=import_run(
                findings=BACKGROUND + host_ports,
                at=at(day),
                targets=NET,
                ports="1-65535",
                send=False,
            ).pk
        )
    proxy_runs = []
    for day in range(3, 8):  # more runs than it takes to close a port
        run = import_run(findings=BACKGROUND, at=at(day), targets=NET, ports="1-65535", send=False)
        host_answering_all_record(
            run_id=run.pk, answering_all={HOST: 64000}, probed=65535, at=at(day)
        )
        run_diff(run_id=run.pk)
        proxy_runs.append(run)

    events = list(
        AlertEvent.objects.filter(host__ip=HOST, run__in=proxy_runs).values_list(
            "kind", "port", "run"
        )
    )
    assert events == [(EventKind.HOST_ANSWERS_ALL, 0, proxy_runs[0].pk)]
    # Its real ports are unknown meanwhile: no misses counted, still open.
    assert list(Port.objects.filter(host__ip=HOST).values_list("port", "state", "missed_runs")) == [
        (22, "open", 0),
        (8080, "open", 0),
    ]
    event = AlertEvent.objects.get(host__ip=HOST, kind=EventKind.HOST_ANSWERS_ALL)
    line = Item(
        event_id=event.pk,
        kind=event.kind,
        ip=HOST,
        proto=event.proto,
        port=event.port,
        network=NET,
        state=event.state,
        created_at=event.created_at,
        url="",
        detail=event.detail,
    )
    assert f"{line.endpoint}  {line.kind_label}: {line.summary}" == (
        f"{HOST}  answers on all ports: 64,000 of 65,535 ports probed: SYN proxy, tarpit or "
        "middlebox; ports not listed"
    )
    assert Host.objects.filter(ip=HOST).count() == 1


def test_the_run_end_reprobe_leaves_a_proxy_host_alone(db, monkeypatch):
    from django.core.management import call_command
    from django.utils import timezone

    from scanner.engines import connect
    from scanner.services.reprobe import ports_reprobe

    call_command("scope", "add", "198.18.0.0/24", "--zone", "internal")
    for ip in ("198.18.0.9", "198.18.0.10"):  # both had port 22 open yesterday
        host = Host.objects.create(ip=ip)
        Port.objects.create(host=host, port=22, last_seen=timezone.now())
    run = ScanRun.objects.create(targets="198.18.0.0/24", ports="1-1024")
    host_answering_all_record(
        run_id=run.pk, answering_all={"198.18.0.9": 65000}, probed=65535, at=timezone.now()
    )
    probed = []
    monkeypatch.setattr(
        connect, "verify", lambda candidates, *a, **kw: probed.extend(candidates) or []
    )

    ports_reprobe(run_id=run.pk)

    assert [(f.ip, f.port) for f in probed] == [("198.18.0.10", 22)]
