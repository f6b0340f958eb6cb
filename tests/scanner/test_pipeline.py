"""The scan pipeline end to end on loopback: real Celery workers on Redis, real nmap."""

import asyncio
import os
import signal
import socket
import threading
import time

import pytest
from django.core.management import call_command

from scanner.models import PortObservation, RunState, ScanRun, ScanShard, ShardState
from scanner.services.runs import run_start

SSH_BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"


class Listeners:
    """TCP services on loopback addresses: some silent, one speaking SSH."""

    def __init__(self, specs: list[tuple[str, int, bytes]]):
        self.specs = specs
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    async def _handle(self, banner, reader, writer):
        if banner:
            writer.write(banner)
            await writer.drain()
        try:
            await asyncio.wait_for(reader.read(1024), timeout=5)
        except (TimeoutError, ConnectionError):
            pass
        writer.close()

    def _serve(self):
        asyncio.set_event_loop(self.loop)
        servers = [
            self.loop.run_until_complete(
                asyncio.start_server(lambda r, w, b=banner: self._handle(b, r, w), ip, port)
            )
            for ip, port, banner in self.specs
        ]
        self.ready.set()
        self.loop.run_forever()
        for server in servers:  # stop listening: the ports must really be closed afterwards
            server.close()
        self.loop.close()

    def __enter__(self):
        self.thread.start()
        self.ready.wait(10)
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def free_ports(n: int, ip: str = "127.0.0.1") -> list[int]:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    socks = [socket.socket(family) for _ in range(n)]
    for s in socks:
        s.bind((ip, 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def answers_everywhere(port: int) -> bool:
    """True for a service bound to all addresses (it answers on every 127.x host too)."""
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.254", port)) == 0


def wait_run(run_id: int, seconds: float) -> ScanRun:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        run = ScanRun.objects.get(pk=run_id)
        if run.state in (RunState.FINISHED, RunState.FAILED):
            return run
        time.sleep(0.3)
    shards = list(ScanShard.objects.filter(run_id=run_id).values("index", "state", "attempts"))
    raise AssertionError(f"run {run_id} still {run.state} after {seconds}s; shards {shards}")


@pytest.fixture
def loopback_scope(transactional_db):
    call_command("scope", "add", "127.0.0.0/8", "--zone", "internal")


@pytest.mark.celery
def test_it_sweeps_and_fingerprints_through_real_workers(celery_workers, loopback_scope):
    ssh_port, web_port, other = free_ports(3)
    specs = [
        ("127.0.0.2", ssh_port, SSH_BANNER),
        ("127.0.0.2", web_port, b""),
        ("127.0.0.3", other, b""),
    ]
    celery_workers.start("sweep", "sweep.internal")
    celery_workers.start("fp", "default,fingerprint", concurrency=2)
    low, high = min(ssh_port, web_port, other), max(ssh_port, web_port, other)
    with Listeners(specs):
        run = run_start(
            targets="127.0.0.2,127.0.0.3,127.0.0.4",
            ports=f"{low}-{high},1-100",
            engine="connect",
        )
        run = wait_run(run.pk, 120)
    assert run.state == RunState.FINISHED, run.error
    found = {
        (ip, port)
        for ip, port in PortObservation.objects.filter(run=run).values_list("host__ip", "port")
        if not answers_everywhere(port)
    }
    assert found == {(ip, port) for ip, port, _ in specs}
    ssh = PortObservation.objects.get(run=run, host__ip="127.0.0.2", port=ssh_port)
    assert ssh.service == "ssh" and "OpenSSH" in ssh.product
    assert (run.hosts_found, run.ports_found) == (2, 3)


@pytest.mark.celery
def test_it_survives_a_killed_worker_without_losing_or_doubling_ports(
    celery_workers, loopback_scope, settings
):
    settings.PORTMON_SHARD_PROBES = 2 * 65535
    hosts = [f"127.0.0.{i}" for i in range(10, 16)]
    specs = [(ip, p, b"") for ip in hosts for p in free_ports(2, ip)]
    slow = {
        # Small concurrency makes a shard take seconds, so the kill lands mid-shard.
        "PORTMON_CONNECT_CONCURRENCY": "128",
        # The whole worker dies here (its node): Redis gives the task back after this.
        "CELERY_VISIBILITY_TIMEOUT": "12",
    }
    celery_workers.start("sweep-a", "sweep.internal", extra_env=slow)
    celery_workers.start("sweep-b", "sweep.internal", extra_env=slow)
    with Listeners(specs):
        run = run_start(
            targets="127.0.0.10/31,127.0.0.12/31,127.0.0.14/31",
            ports="1-65535",
            engine="connect",
            fingerprint=False,
        )
        deadline = time.monotonic() + 60
        victim = None
        while victim is None and time.monotonic() < deadline:
            victim = (
                ScanShard.objects.filter(run=run, state=ShardState.RUNNING, worker="sweep-a@test")
                .values_list("index", flat=True)
                .first()
            )
            time.sleep(0.1)
        assert victim is not None, "sweep-a never took a shard"
        celery_workers.kill("sweep-a", signal.SIGKILL)
        run = wait_run(run.pk, 240)
    assert run.state == RunState.FINISHED and not run.degraded, run.error
    rows = list(PortObservation.objects.filter(run=run).values_list("host__ip", "port"))
    assert len(rows) == len(set(rows))
    # Services of this machine that listen on every address are found too; nothing else.
    found = {(ip, port) for ip, port in rows if not answers_everywhere(port)}
    assert found == {(ip, port) for ip, port, _ in specs}
    redone = ScanShard.objects.get(run=run, index=victim)
    assert redone.state == ShardState.DONE and redone.attempts == 2
    assert redone.worker == "sweep-b@test"


@pytest.mark.celery
def test_a_fingerprint_task_lost_with_its_worker_is_done_by_another(celery_workers, loopback_scope):
    quiet, ssh = free_ports(2, "127.0.0.21")
    # A port that never speaks keeps nmap -sV busy for seconds: time to kill its worker.
    specs = [("127.0.0.21", quiet, b""), ("127.0.0.21", ssh, SSH_BANNER)]
    redeliver = {"CELERY_VISIBILITY_TIMEOUT": "12"}
    celery_workers.start("sweep", "sweep.internal")
    celery_workers.start("fp-a", "fingerprint", extra_env=redeliver)
    with Listeners(specs):
        run = run_start(
            targets="127.0.0.21", ports=f"{min(quiet, ssh)}-{max(quiet, ssh)}", engine="connect"
        )
        deadline = time.monotonic() + 60
        waiting = PortObservation.objects.filter(run=run, fingerprinted=False)
        while not waiting.exclude(fingerprint_claim="").exists():
            assert time.monotonic() < deadline, "fp-a never started fingerprinting"
            time.sleep(0.1)
        celery_workers.kill("fp-a", signal.SIGKILL)
        celery_workers.start("fp-b", "default,fingerprint", extra_env=redeliver)
        run = wait_run(run.pk, 120)

    assert run.state == RunState.FINISHED, run.error
    named = dict(PortObservation.objects.filter(run=run).values_list("port", "service"))
    assert named[ssh] == "ssh" and quiet in named
    assert "fingerprint_hosts" in celery_workers.log("fp-b")
    assert not nmap_processes_for("127.0.0.21")  # fp-a's nmap died with it


def nmap_processes_for(ip: str) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                    argv = fh.read().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"nmap") and ip.encode() in argv:
                found.append(int(entry.name))
    return found


@pytest.mark.celery
def test_it_fails_a_shard_that_overruns_its_time_limit_after_retries(
    celery_workers, loopback_scope
):
    # The sweep worker's own limits apply (shards are queued without limits in the message).
    hang = {
        "PORTMON_CONNECT_CONCURRENCY": "1",
        "PORTMON_SHARD_MAX_ATTEMPTS": "2",
        "PORTMON_SHARD_SOFT_TIME_LIMIT": "3",
        "PORTMON_SHARD_TIME_LIMIT": "4",
    }
    celery_workers.start("sweep", "sweep.internal", extra_env=hang)
    run = run_start(targets="127.0.0.16/28", ports="1-65535", engine="connect", fingerprint=False)
    run = wait_run(run.pk, 90)
    shard = ScanShard.objects.get(run=run)
    assert shard.state == ShardState.FAILED and shard.attempts == 2
    assert "gave up after 2 attempts" in shard.error
    # A run with a failed shard is finished but degraded: it must not close any port.
    assert run.state == RunState.FINISHED and run.degraded
    assert "time limit (3s) exceeded" in celery_workers.log("sweep").lower()
