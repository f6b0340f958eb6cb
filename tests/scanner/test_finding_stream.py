"""Streaming open ports to nmap: findings are recorded at once, hosts queued in batches."""

import ipaddress
import socket
import time

import pytest
from django.core.management import call_command

from scanner import sweep
from scanner.engines.options import SweepOptions
from scanner.findings import Finding
from scanner.models import PortObservation, ScanRun, ScanShard, ShardState
from scanner.recall import ProbeLedger
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
def listener():
    socks = []

    def listen(ip: str) -> int:
        sock, port = _listen_free(ip, 30000)
        socks.append(sock)
        return port

    yield listen
    for sock in socks:
        sock.close()


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


@pytest.mark.parametrize(
    ("elapsed", "percent", "window"),
    [
        (0.0, 0.0, 5.0),  # no pace known yet
        (10.0, 50.0, 5.0),  # 10 s to go
        (20.0, 79.0, 5.0),  # 5.3 s to go
        (20.0, 80.0, 1.0),  # 5 s to go
        (44.0, 99.5, 1.0),
        (46.0, 100.0, 1.0),  # masscan waiting for late answers
    ],
)
def test_the_window_shrinks_when_the_sweep_is_about_to_end(elapsed, percent, window):
    assert sweep.stream_window(elapsed, percent) == window


def test_ports_found_in_the_sweeps_last_seconds_are_queued_within_a_second(run, clock, queued):
    # A port found 4 s before the end of a 45 s sweep would wait for the end's flush with a
    # 5 s window, and its nmap run would then be the run's tail.
    stream = sweep.FindingStream(run_id=run.pk, fingerprint=True)
    clock[0] += 30
    stream.tick(66.0)  # 15 s to go: the usual window
    stream(Finding("198.18.0.5", 22))
    clock[0] += 1
    stream.tick(68.0)
    assert queued == []
    clock[0] += 4.5
    stream.tick(79.0)  # 9.6 s to go, 5.5 s since the port: its window is over
    assert queued == [["198.18.0.5"]]
    clock[0] += 5
    stream.tick(90.0)  # 4 s to go
    stream(Finding("198.18.0.6", 6379))
    clock[0] += 0.5
    stream.tick(91.0)
    assert queued == [["198.18.0.5"]]
    clock[0] += 0.5
    stream.tick(92.0)  # a second after it was found, not at the sweep's end
    assert queued == [["198.18.0.5"], ["198.18.0.6"]]


@pytest.mark.django_db(transaction=True)
def test_a_port_the_re_probe_finds_goes_to_nmap_without_waiting_for_a_window(queued, listener):
    # After masscan's pass the unanswered probes are re-probed with connects; a port found
    # then is queued at once (the sweep is over), not left for the shard's end. (The
    # connects' callbacks record from their own thread: a transactional test.)
    run = ScanRun.objects.create(targets="127.0.0.9")
    port = listener("127.0.0.9")
    shard = ScanShard.objects.create(run=run, index=0, targets="127.0.0.9", ports=str(port))
    ledger = ProbeLedger(["127.0.0.9"], [(port - 1, port + 1)])
    ledger.mark_many([("127.0.0.9", port - 1), ("127.0.0.9", port + 1)])  # answered: closed
    stream = sweep.FindingStream(run_id=run.pk, fingerprint=True)
    options = SweepOptions(
        targets=[ipaddress.ip_address("127.0.0.9")],
        ports=[(port - 1, port + 1)],
        deadline=time.monotonic() + 30,
    )

    found = sweep.gaps_reprobe(shard=shard, ledger=ledger, options=options, stream=stream)

    assert [(f.ip, f.port) for f in found] == [("127.0.0.9", port)]
    assert queued == [["127.0.0.9"]]
    assert PortObservation.objects.filter(run=run, port=port).exists()


def test_a_run_without_fingerprints_only_records(run, clock, queued):
    stream = sweep.FindingStream(run_id=run.pk, fingerprint=False)

    for second in range(30):
        clock[0] += 1
        stream(Finding("198.18.0.5", 1000 + second))

    assert queued == []
    assert PortObservation.objects.filter(run=run).count() == 30


def test_held_hosts_released_together_are_each_recorded_once(run, clock, queued):
    # A batch of answers (the connect scanner's, every half second) can show several held
    # hosts to be real hosts at once; recording one ticks, and the tick releases the others.
    threshold = sweep.synproxy.Threshold(min_ports=1000, min_share=0.05)
    stream = sweep.FindingStream(run_id=run.pk, fingerprint=True, threshold=threshold)
    hosts = [f"198.18.0.{i}" for i in range(1, 6)]
    for ip in hosts:
        stream(Finding(ip, 22))
    assert PortObservation.objects.filter(run=run).count() == 0  # held: no answers yet
    clock[0] += sweep.STREAM_FINGERPRINT_EVERY_S  # so that the first record flushes

    stream.answered([(ip, port) for ip in hosts for port in range(1, 500)])
    stream.tick()

    recorded = PortObservation.objects.filter(run=run).values_list("host__ip", "port")
    assert sorted(recorded) == [(ip, 22) for ip in hosts]
    stream.flush()
    assert sorted(ip for batch in queued for ip in batch) == hosts


def _listen_free(ip: str, start: int) -> tuple[socket.socket, int]:
    for port in range(start, start + 2000):
        sock = socket.socket()
        try:
            sock.bind((ip, port))
        except OSError:
            sock.close()
            continue
        sock.listen(8)
        return sock, port
    raise RuntimeError("no free port")


@pytest.mark.django_db(transaction=True)
def test_the_connect_engine_records_and_queues_ports_while_it_still_sweeps(monkeypatch):
    # Loopback, IPv6 and unprivileged workers use the connect engine: their open ports must
    # reach nmap during the sweep too, not when the whole shard is over.
    call_command("scope", "add", "127.0.0.0/8", "--zone", "internal")
    sock, port = _listen_free("127.0.0.2", 20000)
    queued = []
    monkeypatch.setattr(
        publish,
        "fingerprints_publish",
        lambda *, run_id, ips, claim="": queued.append((time.monotonic(), ips)),
    )
    monkeypatch.setattr(sweep, "STREAM_FINGERPRINT_EVERY_S", 0.0)
    # Port-major order: the open port is among the first of 60,002 probes.
    ports = f"{port}-{port + 30000}"
    targets = "127.0.0.2,127.0.0.3"
    run = ScanRun.objects.create(targets=targets, ports=ports, engine="connect")
    shard = ScanShard.objects.create(
        run=run, index=0, targets=targets, ports=ports, probes_total=60002,
        state=ShardState.RUNNING,
    )  # fmt: skip
    started = time.monotonic()
    try:
        findings = sweep.shard_sweep(shard=shard)
    finally:
        sock.close()
    took = time.monotonic() - started

    assert [(f.ip, f.port) for f in findings] == [("127.0.0.2", port)]
    assert queued and queued[0][1] == ["127.0.0.2"]
    # Handed over within the first answers (every 0.5 s), not when the sweep ended.
    assert queued[0][0] - started < 0.6 * took, ("queued at the sweep's end", took)
    assert PortObservation.objects.filter(run=run, port=port).exists()
