"""Streaming open ports to nmap: findings are recorded at once, hosts queued in batches."""

import pytest

from scanner import sweep
from scanner.findings import Finding
from scanner.models import PortObservation, ScanRun
from scanner.services import publish


@pytest.fixture
def clock(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(sweep.time, "monotonic", lambda: now[0])
    return now


@pytest.fixture
def queued(monkeypatch):
    calls = []
    monkeypatch.setattr(publish, "fingerprints_publish", lambda *, run_id, ips: calls.append(ips))
    return calls


@pytest.fixture
def run(db):
    return ScanRun.objects.create(targets="198.18.0.0/24")


@pytest.fixture
def stream(run):
    return sweep.FindingStream(run_id=run.pk, fingerprint=True)


def test_hosts_found_within_a_window_share_one_queueing(run, stream, clock, queued):
    stream(Finding("198.18.0.5", 22))
    clock[0] += 2
    stream(Finding("198.18.0.3", 80))
    stream(Finding("198.18.0.5", 443))
    assert queued == []  # still gathering
    clock[0] += sweep.STREAM_FINGERPRINT_EVERY_S
    stream(Finding("198.18.0.9", 8080))
    assert queued == [["198.18.0.3", "198.18.0.5", "198.18.0.9"]]
    clock[0] += 1
    stream(Finding("198.18.0.3", 8443))  # a new window starts with this host
    assert len(queued) == 1

    # Every port is in the database the moment it was seen, fingerprinted or not.
    recorded = PortObservation.objects.filter(run=run).values_list("host__ip", "port")
    assert sorted(recorded) == [
        ("198.18.0.3", 80), ("198.18.0.3", 8443), ("198.18.0.5", 22), ("198.18.0.5", 443),
        ("198.18.0.9", 8080),
    ]  # fmt: skip


def test_hosts_are_queued_when_their_window_ends_even_if_no_port_follows(stream, clock, queued):
    stream(Finding("198.18.0.5", 22))
    clock[0] += 1
    stream.tick()  # the sweep's progress callback, a few times a second
    assert queued == []
    clock[0] += sweep.STREAM_FINGERPRINT_EVERY_S
    stream.tick()
    stream.tick()
    assert queued == [["198.18.0.5"]]
    stream(Finding("198.18.0.7", 22))
    stream.flush()  # the sweep ended: no reason to wait out the window
    stream.flush()
    assert queued == [["198.18.0.5"], ["198.18.0.7"]]


def test_a_run_without_fingerprints_only_records(run, clock, queued):
    stream = sweep.FindingStream(run_id=run.pk, fingerprint=False)

    for second in range(30):
        clock[0] += 1
        stream(Finding("198.18.0.5", 1000 + second))

    assert queued == []
    assert PortObservation.objects.filter(run=run).count() == 30


def test_hosts_that_become_real_at_once_are_each_recorded_once(run, clock, queued):
    # Seen on the bench lab: two held hosts found real by one batch of answers; recording
    # the first checks the held hosts again (tick), which recorded the second, and the
    # outer loop then failed the whole shard on it (KeyError on its address).
    from scanner import synproxy

    threshold = synproxy.Threshold(min_ports=1000, min_share=0.05)
    stream = sweep.FindingStream(run_id=run.pk, fingerprint=True, threshold=threshold)
    stream(Finding("198.18.0.5", 22))
    stream(Finding("198.18.0.6", 22))
    assert PortObservation.objects.filter(run=run).count() == 0  # held: not known real yet
    stream.answered([(ip, port) for ip in ("198.18.0.5", "198.18.0.6") for port in range(200)])

    stream(Finding("198.18.0.7", 80))

    recorded = PortObservation.objects.filter(run=run).values_list("host__ip", "port")
    assert sorted(recorded) == [("198.18.0.5", 22), ("198.18.0.6", 22)]
