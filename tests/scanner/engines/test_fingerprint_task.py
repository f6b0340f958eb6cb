"""A fingerprint task: claims a run's waiting ports, runs nmap over batches, records each port
as nmap names it, completes the run."""

import io
import sys
import threading
import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from scanner.engines import nmap
from scanner.findings import Finding
from scanner.models import Port, PortObservation, RunState, ScanRun
from scanner.selectors import run_progress
from scanner.services import fingerprints, publish
from scanner.services.results import observations_record
from tests.scanner.engines.conftest import ServiceThread


@pytest.mark.process
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

    assert fingerprints.fingerprint_run_hosts(run_id=run.pk, ips=["127.0.0.4", "127.0.0.6"]) == 2

    assert sorted(planned, key=list) == [{"127.0.0.4": [ssh]}, {"127.0.0.6": [http]}]
    named = PortObservation.objects.filter(run=run).values_list("host__ip", "service", "product")
    assert sorted(named) == [("127.0.0.4", "ssh", "OpenSSH"), ("127.0.0.6", "http", "nginx")]
    run.refresh_from_db()
    assert run.state == RunState.FINISHED
    # A second task for the same hosts finds nothing left to claim.
    assert fingerprints.fingerprint_run_hosts(run_id=run.pk, ips=["127.0.0.4", "127.0.0.6"]) == 0


def claimed_run(ip: str, port: int, *, claim: str, minutes_ago: float) -> ScanRun:
    run = ScanRun.objects.create(targets="127.0.0.0/24", state=RunState.FINGERPRINTING)
    observations_record(run_id=run.pk, findings=[Finding(ip, port)], seen_at=timezone.now())
    PortObservation.objects.filter(run=run).update(
        fingerprint_claim=claim,
        fingerprint_claimed_at=timezone.now() - timedelta(minutes=minutes_ago),
    )
    return run


@pytest.mark.process
@pytest.mark.django_db
def test_a_redelivered_task_takes_back_the_ports_its_first_delivery_claimed(services):
    ssh = services.start("ssh", "127.0.0.4")
    # The first delivery claimed the port, then its worker was killed: a fresh claim.
    run = claimed_run("127.0.0.4", ssh, claim="a" * 32, minutes_ago=0.1)

    assert fingerprints.fingerprint_run_hosts(run_id=run.pk, ips=["127.0.0.4"], claim="b" * 32) == 0
    assert fingerprints.fingerprint_run_hosts(run_id=run.pk, ips=["127.0.0.4"], claim="a" * 32) == 1

    assert PortObservation.objects.get(run=run).service == "ssh"
    run.refresh_from_db()
    assert run.state == RunState.FINISHED


@pytest.mark.django_db
def test_the_reaper_hands_ports_of_a_dead_task_to_a_new_one(monkeypatch):
    # A live task's claim is refreshed every 2 s; one silent for 4 minutes belongs to the dead.
    dead = claimed_run("127.0.0.4", 2222, claim="a" * 32, minutes_ago=4)
    busy = claimed_run("127.0.0.5", 2222, claim="c" * 32, minutes_ago=0.1)
    queued = []
    monkeypatch.setattr(publish, "fingerprints_publish", lambda **kw: queued.append(kw))

    assert fingerprints.fingerprints_reap() == 1

    (call,) = queued
    assert (call["run_id"], call["ips"]) == (dead.pk, ["127.0.0.4"])
    handed = PortObservation.objects.get(run=dead)
    assert handed.fingerprint_claim == call["claim"] != "a" * 32
    assert PortObservation.objects.get(run=busy).fingerprint_claim == "c" * 32
    # The new claim is fresh: a reap a minute later does not queue the same ports again.
    assert fingerprints.fingerprints_reap() == 0


@pytest.mark.django_db
def test_the_reaper_queues_ports_whose_task_message_was_lost(monkeypatch):
    # A broker restart lost the queued tasks: no task ever claimed these ports.
    long_ago = timezone.now() - timedelta(minutes=5)
    lost = claimed_run("127.0.0.4", 2222, claim="", minutes_ago=5)
    ScanRun.objects.filter(pk=lost.pk).update(fingerprinting_at=long_ago)
    # This run's tasks are at work (a claim seconds old): its unclaimed port is just queued.
    busy = claimed_run("127.0.0.5", 2222, claim="c" * 32, minutes_ago=0.1)
    ScanRun.objects.filter(pk=busy.pk).update(fingerprinting_at=long_ago)
    observations_record(run_id=busy.pk, findings=[Finding("127.0.0.6", 22)], seen_at=long_ago)
    # And a run that only just began fingerprinting has had no time to claim anything.
    fresh = claimed_run("127.0.0.7", 2222, claim="", minutes_ago=5)
    ScanRun.objects.filter(pk=fresh.pk).update(fingerprinting_at=timezone.now())
    queued = []
    monkeypatch.setattr(publish, "fingerprints_publish", lambda **kw: queued.append(kw))

    assert fingerprints.fingerprints_reap() == 1

    (call,) = queued
    assert (call["run_id"], call["ips"]) == (lost.pk, ["127.0.0.4"])
    assert PortObservation.objects.get(run=lost).fingerprint_claim == call["claim"]


def fingerprint_in_background(run_id: int, ips: list[str]) -> threading.Thread:
    def work():
        try:
            fingerprints.fingerprint_run_hosts(run_id=run_id, ips=ips)
        finally:
            connection.close()

    thread = threading.Thread(target=work)
    thread.start()
    return thread


def named_ports(run: ScanRun) -> dict[int, str]:
    rows = PortObservation.objects.filter(run=run, fingerprinted=True)
    return dict(rows.values_list("port", "service"))


@pytest.mark.process
@pytest.mark.django_db(transaction=True)
def test_fast_ports_are_named_in_the_run_while_slow_and_silent_ones_still_run(
    services, settings, diff_on_finish
):
    # The tail on loopback: a fast HTTP server and an ssh banner next to an HTTP
    # server that answers after 8 s (too late for any nmap probe) and a silent port.
    settings.PORTMON_NMAP_PORT_TIMEOUT = 10
    ssh = services.start("ssh", "127.0.0.12")
    http = services.start("http", "127.0.0.12")
    slow = services.start("slow", "127.0.0.12")
    silent = services.start("silent", "127.0.0.13")
    run = ScanRun.objects.create(targets="127.0.0.0/24", state=RunState.FINGERPRINTING)
    ports = [("127.0.0.12", ssh), ("127.0.0.12", http), ("127.0.0.12", slow)]
    ports.append(("127.0.0.13", silent))
    observations_record(
        run_id=run.pk, findings=[Finding(ip, port) for ip, port in ports], seen_at=timezone.now()
    )
    started = time.monotonic()
    progress = []  # (seconds, fingerprinted, named) whenever it changed

    task = fingerprint_in_background(run.pk, ["127.0.0.12", "127.0.0.13"])
    while True:
        running = task.is_alive()
        p = run_progress(run_id=run.pk)
        if not progress or progress[-1][1:] != (p["fingerprinted"], p["named"]):
            progress.append((time.monotonic() - started, p["fingerprinted"], p["named"]))
        if not running:
            break
        time.sleep(0.2)
    took = time.monotonic() - started

    # Both fast ports were on the run's page within a few seconds, while nmap still ran.
    first_named = next(at for at, _done, named in progress if named == 2)
    assert first_named < 10 < took, progress
    assert named_ports(run) == {ssh: "ssh", http: "http", slow: "", silent: ""}
    assert progress[-1][1:] == (4, 2)
    # And complete: the CPE only nmap's XML has, though the host's XML was lost to its timeout.
    assert PortObservation.objects.get(run=run, port=ssh).cpe.startswith("cpe:/a:openbsd")
    assert len(progress) >= 3  # 0 -> the fast ones -> all four: it moved
    # Each port's budget (nmap notices it up to ~8 s late), then a second run for the named
    # ports of the host that timed out (~7-15 s, within its own budget): not nmap's 164 s.
    assert took < 2 * (10 + 8) + 5, progress
    # Timed out is unnamed, never closed: both stay open ports of the finished run.
    run.refresh_from_db()
    assert run.state == RunState.FINISHED
    assert Port.objects.filter(host__ip="127.0.0.12", port=slow, state="open").exists()
    assert Port.objects.get(host__ip="127.0.0.12", port=slow).service == ""


@pytest.mark.process
@pytest.mark.django_db(transaction=True)
def test_a_port_whose_fingerprint_timed_out_is_fingerprinted_again_by_the_next_run(
    services, settings, diff_on_finish
):
    settings.PORTMON_NMAP_PORT_TIMEOUT = 5
    silent_services = ServiceThread()
    port = silent_services.start("silent", "127.0.0.14")

    def run_once() -> ScanRun:
        run = ScanRun.objects.create(targets="127.0.0.0/24", state=RunState.FINGERPRINTING)
        observations_record(
            run_id=run.pk, findings=[Finding("127.0.0.14", port)], seen_at=timezone.now()
        )
        fingerprints.fingerprint_run_hosts(run_id=run.pk, ips=["127.0.0.14"])
        run.refresh_from_db()
        return run

    first = run_once()
    silent_services.stop()  # the service wakes up: same port, now an ssh server
    services.start("ssh", "127.0.0.14", port=port)
    second = run_once()

    assert first.state == second.state == RunState.FINISHED
    assert named_ports(first) == {port: ""}
    assert named_ports(second) == {port: "ssh"}
    current = Port.objects.get(host__ip="127.0.0.14", port=port)
    assert (current.service, current.seen_count) == ("ssh", 2)


class TimedLines(io.StringIO):
    """sys.stderr for the scan command: each line it writes, with when."""

    def __init__(self):
        super().__init__()
        self.started = time.monotonic()
        self.lines: list[tuple[float, str]] = []

    def write(self, text: str) -> int:
        self.lines.extend((time.monotonic() - self.started, t) for t in text.splitlines())
        return super().write(text)


@pytest.mark.celery
def test_scan_shows_ports_named_while_nmap_waits_on_slow_services(
    celery_workers, services, monkeypatch
):
    # The whole path as an operator sees it: manage.py scan, real workers, the connect sweep.
    call_command("scope", "add", "127.0.0.0/8", "--zone", "internal")
    ssh = services.start("ssh", "127.0.0.15")
    http = services.start("http", "127.0.0.15")
    slow = services.start("slow", "127.0.0.15")
    silent = services.start("silent", "127.0.0.16")
    timeout = {"PORTMON_NMAP_PORT_TIMEOUT": "20"}
    celery_workers.start("sweep", "sweep.internal", extra_env=timeout)
    celery_workers.start("fp", "default,fingerprint", concurrency=2, extra_env=timeout)
    stderr, out = TimedLines(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)

    call_command(
        "scan",
        "127.0.0.15,127.0.0.16",
        "--ports",
        ",".join(map(str, sorted({ssh, http, slow, silent}))),
        "--engine",
        "connect",
        "--timeout",
        "120",
        stdout=out,
    )

    progress = [(at, line) for at, line in stderr.lines if "fingerprinted" in line]
    named_two = [at for at, line in progress if "2/4 fingerprinted (2 named)" in line]
    done = [at for at, line in progress if "4/4 fingerprinted" in line]
    assert named_two and done, stderr.lines
    # The fast ones showed up named at least 10 s before the slow ones gave up, and the
    # line kept moving while nmap waited on those.
    assert named_two[0] + 10 < done[0], progress
    waiting = [line for at, line in progress if named_two[0] < at < done[0]]
    assert any(line.endswith(", 2 in nmap, none done for 10s") for line in waiting), progress
    rows = {int(line.split()[1].split("/")[0]): line for line in out.getvalue().splitlines()[:-1]}
    assert "ssh OpenSSH" in rows[ssh] and "http nginx" in rows[http]
    assert rows[slow].split()[2:] == [] and rows[silent].split()[2:] == []  # open, unnamed
    assert out.getvalue().splitlines()[-1] == "4 open port(s) on 2 host(s)"


@pytest.mark.django_db
def test_a_batch_that_ends_settles_its_own_ports_only():
    # A host with more ports than one nmap run takes is split over runs: the first run's
    # end must not mark the ports another run is still probing, and a port named while
    # nmap ran keeps its name when the run's final word on it is "nothing".
    run = ScanRun.objects.create(targets="198.18.0.0/24", state=RunState.FINGERPRINTING)
    observations_record(
        run_id=run.pk,
        findings=[Finding("198.18.0.1", port) for port in (22, 80, 443, 8080)],
        seen_at=timezone.now(),
    )
    pending = list(PortObservation.objects.filter(run=run).select_related("host"))
    ledger = fingerprints.FingerprintLedger(pending)
    ssh = Finding("198.18.0.1", 22, service="ssh", product="OpenSSH")

    ledger.name(ssh)
    assert ledger.record() == 1
    ledger.finish(
        {"198.18.0.1": [22, 80]},
        {"198.18.0.1": nmap.HostResult("198.18.0.1", "unknown", [], error="timeout")},
    )
    assert ledger.record() == 2

    state = dict(PortObservation.objects.filter(run=run).values_list("port", "fingerprinted"))
    assert state == {22: True, 80: True, 443: False, 8080: False}
    assert PortObservation.objects.get(run=run, port=22).product == "OpenSSH"
    assert PortObservation.objects.get(run=run, port=80).service == ""
