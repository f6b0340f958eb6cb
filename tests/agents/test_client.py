"""The real client process against a real server process (gunicorn) on loopback."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents.models import AgentReport, ProcessSocket
from agents.services.enrollment import agent_add
from alerts.models import AlertEvent, Rule
from tests.conftest import ROOT, database_url_for_subprocess

# The server process sees committed rows only.
pytestmark = pytest.mark.django_db(transaction=True)

CLIENT = ROOT / "agents/client/portmon_agent.py"
PYTHON = os.path.realpath(sys.executable)
LISTEN = (
    "import socket, sys, time; s = socket.socket(); s.bind((sys.argv[1], 0)); s.listen();"
    "print(s.getsockname()[1], flush=True); time.sleep(120)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """gunicorn serving portmon on a free loopback port, stoppable and restartable."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / "gunicorn.log"
        self.proc = None
        self.env = {**os.environ, "DATABASE_URL": database_url_for_subprocess()}

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{self.port}",
             "--workers", "1", "--access-logfile", "-", "portmon.wsgi"],  # fmt: skip
            cwd=ROOT, env=self.env, stdout=self.log.open("a"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert self.proc.poll() is None, self.log.read_text()[-3000:]
                time.sleep(0.1)
        raise RuntimeError(f"gunicorn did not start:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)


@pytest.fixture
def server(tmp_path):
    srv = Server(tmp_path)
    yield srv
    srv.stop()


@pytest.fixture
def listeners(tmp_path):
    """Start a process under a given name listening on an address; returns its port."""
    procs = []

    def start(name: str, address: str) -> int:
        link = tmp_path / "bin" / name
        link.parent.mkdir(exist_ok=True)
        if not link.exists():
            # The kernel names a process after the file it executed: a link to python
            # named ossec-csyslogd is "ossec-csyslogd" with python's exe.
            link.symlink_to(PYTHON)
        proc = subprocess.Popen(
            [str(link), "-c", LISTEN, address], stdout=subprocess.PIPE, text=True
        )
        procs.append(proc)
        return int(proc.stdout.readline())

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def run_client(server: Server, token_file: Path, spool: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(CLIENT), "--once", "--server", server.url,
         "--token-file", str(token_file), "--spool", str(spool)],  # fmt: skip
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def token_file(tmp_path: Path, name: str, ip: str) -> Path:
    path = tmp_path / f"{name}.token"
    path.write_text(agent_add(name=name, ips=[ip]).token + "\n")
    path.chmod(0o600)
    return path


def test_it_reports_real_sockets_and_process_rules_decide_their_events(server, listeners, tmp_path):
    server.start()
    web1 = token_file(tmp_path, "web1", "127.0.0.5")
    web2 = token_file(tmp_path, "web2", "127.0.0.6")
    Rule.objects.create(
        action="allow", process="ossec-csyslogd", reason="ossec everywhere", owner="secops"
    )
    Rule.objects.create(
        action="allow", ip_cidr="127.0.0.5", process="nc", reason="nc on web1", owner="ops"
    )
    ossec = listeners("ossec-csyslogd", "127.0.0.5")
    nc1 = listeners("nc", "127.0.0.5")
    nc2 = listeners("nc", "127.0.0.6")

    first = run_client(server, web1, tmp_path / "spool1")
    second = run_client(server, web2, tmp_path / "spool2")

    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    row = ProcessSocket.objects.get(host__ip="127.0.0.5", port=ossec)
    assert (row.name, row.exe, row.addresses) == ("ossec-csyslogd", PYTHON, ["127.0.0.5"])
    events = {
        (e.host.ip, e.port): (e.kind, e.detail["process"], e.suppressed)
        for e in AlertEvent.objects.select_related("host").filter(port__in=[ossec, nc1, nc2])
    }
    # web2's agent sees web1's loopback sockets too (loopback is the machine's own): it
    # files them under its own host, where the IP rule for nc does not apply.
    assert events[("127.0.0.5", ossec)] == ("new_process", "ossec-csyslogd", True)
    assert events[("127.0.0.5", nc1)] == ("new_process", "nc", True)
    assert events[("127.0.0.6", nc2)] == ("new_process", "nc", False)
    assert events[("127.0.0.6", ossec)] == ("new_process", "ossec-csyslogd", True)


def test_it_spools_while_the_server_is_down_and_delivers_every_report_exactly_once(
    server, tmp_path
):
    web1 = token_file(tmp_path, "web1", "127.0.0.5")
    spool = tmp_path / "state"
    server.start()
    assert run_client(server, web1, spool).returncode == 0
    delivered_first = AgentReport.objects.get()
    server.stop()

    down = [run_client(server, web1, spool) for _ in range(3)]

    assert [r.returncode for r in down] == [1, 1, 1]
    assert [json.loads(r.stdout) for r in down][-1] == {"delivered": 0, "spooled": 3}
    assert "unreachable" in down[0].stderr
    waiting = sorted((spool / "spool").glob("*.json"))
    assert len(waiting) == 3
    # An answer lost after the server recorded a report: the client still holds it.
    replay = spool / "spool" / "00000000000000000000-replayed.json"
    sent = json.loads(waiting[0].read_text())
    server.start()
    up = run_client(server, web1, spool)
    replay.write_text(json.dumps(sent))
    again = run_client(server, web1, spool)

    assert up.returncode == 0 and json.loads(up.stdout) == {"delivered": 4, "spooled": 0}
    assert again.returncode == 0 and json.loads(again.stdout) == {"delivered": 2, "spooled": 0}
    reports = list(AgentReport.objects.order_by("seq"))
    assert len(reports) == 6 == len({r.report_id for r in reports})
    assert reports[0].report_id == delivered_first.report_id
    assert reports[1].report_id == sent["report_id"]
    assert not list((spool / "spool").glob("*.json"))
