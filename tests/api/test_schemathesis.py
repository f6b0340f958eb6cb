"""Schemathesis against the served schema, with an admin token, bounded in examples and
time: 0 server errors, 0 answers (statuses, bodies, content types) the schema does not
document. The server is real (gunicorn on the test database); its broker is a folder
nobody consumes, so no run it accepts ever scans anything."""

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from accounts.services import api_token_issue
from tests.conftest import ROOT, database_url_for_subprocess, worker_redis_url

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.process]

CHECKS = (
    "not_a_server_error,status_code_conformance,response_schema_conformance,"
    "content_type_conformance"
)
MAX_EXAMPLES = 5  # per operation and phase
MAX_SECONDS = 60  # the whole run: ~3,000 requests on a 2-core VM


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for_subprocess(),
        "PORTMON_DATA_DIR": str(tmp_path),
        "CELERY_BROKER_URL": "filesystem://",
        "PORTMON_CACHE_URL": worker_redis_url(),
        "PORTMON_LOGIN_FAILURES": "1000000",
    }
    log = tmp_path / "gunicorn.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2",
         "portmon.wsgi"],  # fmt: skip
        cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    os.killpg(proc.pid, 15)
    proc.wait(timeout=30)


def test_it_passes_schemathesis_with_no_server_error_and_no_schema_violation(
    server, users, world, tmp_path
):
    st = Path(sys.executable).with_name("st")
    assert st.exists() or shutil.which("st"), "schemathesis is in requirements-dev.txt"
    token = api_token_issue(user=users["admin"]).token

    result = subprocess.run(
        [str(st), "run", f"{server}/api/schema/?format=json",
         "-H", f"Authorization: Token {token}", "--checks", CHECKS,
         "--max-examples", str(MAX_EXAMPLES), "--max-time", str(MAX_SECONDS), "--seed", "20",
         "--generation-database", "none", "--request-timeout", "20", "--no-color",
         "--report", "junit", "--report-dir", str(tmp_path / "report")],  # fmt: skip
        cwd=tmp_path, capture_output=True, text=True, timeout=MAX_SECONDS + 120,
    )  # fmt: skip

    summary = result.stdout[result.stdout.find("SUMMARY") :]
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    tested = re.search(r"Tested: (\d+)", summary)
    assert tested and int(tested.group(1)) >= 30, summary  # every operation was reached
