"""The README's run command, for real: web + worker + beat, login page, admin, a scan."""

import http.cookiejar
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.process  # every test here starts real processes

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, log: Path, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"bin/run exited {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"{url} did not answer in {seconds}s:\n{log.read_text()[-4000:]}")


def login(base: str, username: str, password: str) -> urllib.request.OpenerDirector:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(base + "/admin/login/").read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    data = urllib.parse.urlencode(
        {
            "csrfmiddlewaretoken": token,
            "username": username,
            "password": password,
            "next": "/admin/",
        }
    ).encode()
    request = urllib.request.Request(base + "/admin/login/", data=data, headers={"Referer": base})
    opener.open(request)
    return opener


BACKENDS = {
    "embedded": {},
    "mariadb-redis": {
        "DATABASE_URL": "mysql://root@127.0.0.1:3306/portmon_smoke",
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/13",
    },
}


@pytest.fixture
def mariadb_smoke_database():
    import MySQLdb

    conn = MySQLdb.connect(host="127.0.0.1", user="root", port=3306)
    conn.cursor().execute("DROP DATABASE IF EXISTS portmon_smoke")
    conn.cursor().execute("CREATE DATABASE portmon_smoke CHARACTER SET utf8mb4")
    yield
    conn.cursor().execute("DROP DATABASE IF EXISTS portmon_smoke")
    conn.close()


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_it_starts_the_whole_service_and_scans_through_the_worker(backend, tmp_path, request):
    if backend == "mariadb-redis":
        request.getfixturevalue("mariadb_smoke_database")
        import redis

        redis.Redis.from_url(BACKENDS[backend]["CELERY_BROKER_URL"]).flushdb()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "CELERY_"))}
    env.update(
        PORTMON_DATA_DIR=str(tmp_path / "var"),
        PORTMON_BIND=f"127.0.0.1:{port}",
        PORTMON_ADMIN_USER="admin",
        PORTMON_ADMIN_PASSWORD="smoke-test-password-1",
        PORTMON_WORKER_CONCURRENCY="2",
        **BACKENDS[backend],
    )
    log = tmp_path / "run.log"
    proc = subprocess.Popen(
        ["bin/run"], cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        wait_for(base + "/accounts/login/", proc, log)
        assert f"Portmon dashboard: {base}/" in log.read_text()
        # Every page but the login needs a login.
        home = urllib.request.urlopen(base + "/")
        assert home.url.startswith(base + "/accounts/login/")
        admin = login(base, "admin", "smoke-test-password-1").open(base + "/admin/").read()
        for model in (b"Networks", b"Scan runs", b"Ports", b"Scan policies", b"Periodic tasks"):
            assert model in admin

        manage = [sys.executable, "manage.py"]
        subprocess.run([*manage, "scope", "add", "127.0.0.0/8", "--zone", "internal"],
                       cwd=ROOT, env=env, check=True, capture_output=True)  # fmt: skip
        target_port = listener.getsockname()[1]
        scan = subprocess.run(
            [*manage, "scan", "127.0.0.1", "--ports", str(target_port), "--engine", "connect",
             "--no-fingerprint", "--json", "--timeout", "120"],
            cwd=ROOT, env=env, capture_output=True, text=True,
        )  # fmt: skip
        assert scan.returncode == 0, scan.stderr + log.read_text()[-3000:]
        rows = json.loads(scan.stdout)
        assert [(r["ip"], r["port"]) for r in rows] == [("127.0.0.1", target_port)]
        assert "finished" in scan.stderr
        assert "beat: Starting" in log.read_text()
        # Nobody else on the machine reads the data directory (the SQLite file, the key).
        data = tmp_path / "var"
        assert data.stat().st_mode & 0o777 == 0o700
        if backend == "embedded":
            assert (data / "portmon.sqlite3").stat().st_mode & 0o077 == 0
    finally:
        listener.close()
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
