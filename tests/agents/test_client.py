"""The real client process against a real server process (gunicorn) on loopback."""

import http.client
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agents.models import AgentReport, ProcessSocket
from agents.services.enrollment import agent_add
from alerts.models import AlertEvent, Rule
from tests.conftest import ROOT, database_url_for_subprocess

# The server process sees committed rows only.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.process]

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


def run_client(server, token_file: Path, spool: Path) -> subprocess.CompletedProcess:
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


def post_chunked(server: Server, token: str, body: bytes) -> tuple[int, dict]:
    """POST with Transfer-Encoding: chunked (an iterable body and no Content-Length)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    chunks = (body[i : i + 4096] for i in range(0, len(body), 4096))
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    try:
        conn.request("POST", "/api/agents/report", body=chunks, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_it_reads_chunked_reports_through_gunicorn_up_to_the_limit(server, tmp_path):
    server.start()
    token = agent_add(name="web1", ips=["127.0.0.5"]).token
    report = {
        "report_id": str(uuid.uuid4()),
        "seq": 1,
        "collected_at": datetime.now(UTC).isoformat(),
        "sockets": [{"proto": "tcp", "address": "127.0.0.5", "port": 8080, "name": "nc"}],
    }

    accepted = post_chunked(server, token, json.dumps(report).encode())
    too_big = post_chunked(server, token, b"[" + b"0," * (1 << 20) + b"0]")  # 2 MiB

    assert accepted == (200, {"status": "accepted", "events": 1})
    assert too_big[0] == 413 and "larger than" in too_big[1]["error"]
    assert AgentReport.objects.get().report_id == report["report_id"]


class StandIn:
    """A loopback HTTP server that answers each POST with the next canned (status, body)."""

    def __init__(self, answers: list[tuple[int, str]]) -> None:
        self.answers = list(answers)
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                status, body = stand_in.answers.pop(0)
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.mark.parametrize(
    "status, body",
    [
        (400, "<html><body>400 Bad Request (nginx)</body></html>"),
        (413, "<html><head><title>413 Request Entity Too Large</title></head></html>"),
        (404, "Not Found"),
        (415, '{"detail": "unsupported media type"}'),
        (403, "<html>Forbidden by the corporate proxy</html>"),
        (409, '["not portmon"]'),
        (401, '{"error": "unknown, wrong or revoked token"}'),
    ],
)
def test_it_keeps_a_report_that_something_other_than_portmon_refused(tmp_path, status, body):
    web1 = token_file(tmp_path, "web1", "127.0.0.5")
    stand_in = StandIn([(status, body)])
    try:
        result = run_client(stand_in, web1, tmp_path / "state")
    finally:
        stand_in.httpd.shutdown()

    assert result.returncode == 1 and json.loads(result.stdout)["spooled"] == 1
    assert len(list((tmp_path / "state" / "spool").glob("*.json"))) == 1


def test_it_drops_a_report_portmon_refused_for_its_content(tmp_path):
    web1 = token_file(tmp_path, "web1", "127.0.0.5")
    stand_in = StandIn([(400, '{"error": "must be 1-65535", "field": "sockets[0].port"}')])
    try:
        result = run_client(stand_in, web1, tmp_path / "state")
    finally:
        stand_in.httpd.shutdown()

    assert "refused for good (400)" in result.stderr
    assert not list((tmp_path / "state" / "spool").glob("*.json"))
