"""Real services on loopback for the PoC service tests (scope: 127.0.0.0/8, internal)."""

import socket
import subprocess
import time

import pytest

from tests.alerts.notify.conftest import free_port


class Redis:
    """Debian's redis-server on a loopback address; restart(password=...) hardens it."""

    def __init__(self, ip: str, tmp_path):
        self.ip, self.port, self.tmp = ip, free_port(), tmp_path
        self.proc: subprocess.Popen | None = None

    def start(self, password: str = "") -> "Redis":
        argv = ["redis-server", "--bind", self.ip, "--port", str(self.port), "--save", "",
                "--appendonly", "no", "--dir", str(self.tmp)]  # fmt: skip
        if password:
            argv += ["--requirepass", password]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection((self.ip, self.port), 0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def restart(self, password: str = "") -> None:
        self.stop()
        self.start(password)


@pytest.fixture
def redis_open(tmp_path):
    server = Redis("127.0.0.6", tmp_path).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def loopback_scope(db):
    from scanner.models import Host
    from scanner.services.scope import network_add

    network = network_add(cidr="127.0.0.0/8", zone="internal", owner_email="ops@example.com")

    def host(ip: str) -> Host:
        return Host.objects.get_or_create(ip=ip, defaults={"network": network})[0]

    return host
