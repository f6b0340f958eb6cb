"""manage.py doctor: each check failing on purpose, as an operator would meet it on a node."""

import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from scanner.doctor import CHECKS, FAIL, OK, probe_address, route_verdict
from tests.alerts.notify.conftest import SmtpServer, free_port
from tests.conftest import ROOT, database_url_for_subprocess, worker_redis_url
from tests.scanner.unprivileged import NOBODY, as_nobody


@pytest.fixture
def nobody_dir():
    """A data directory the unprivileged user may write (pytest's tmp_path is root's, 0700)."""
    path = Path(tempfile.mkdtemp(prefix="portmon-doctor-"))
    os.chown(path, NOBODY, NOBODY)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def closed_port():
    """A loopback port that refuses connections: bound (so nobody else takes it), no listen."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def only(*names: str) -> list[str]:
    return ["--skip", ",".join(c for c in CHECKS if c not in names)]


def doctor_here(*args: str) -> tuple[bool, str]:
    """Run doctor in this process: (passed, what it printed)."""
    out = io.StringIO()
    try:
        call_command("doctor", *args, stdout=out)
    except CommandError as exc:
        return False, out.getvalue() + str(exc)
    return True, out.getvalue()


def doctor_process(*args: str, as_user: list[str] = (), **env: str) -> subprocess.CompletedProcess:
    """Run `manage.py doctor` as an operator would, on the test database.

    as_user: a setpriv prefix, to run it as another user with other capabilities.
    """
    full_env = {
        **os.environ,
        "DATABASE_URL": database_url_for_subprocess(),
        "CELERY_BROKER_URL": worker_redis_url(),
        **env,
    }
    return subprocess.run(
        [*as_user, sys.executable, "manage.py", "doctor", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def line_of(output: str, name: str) -> str:
    lines = [line for line in output.splitlines() if line[5:].startswith(name + " ")]
    assert lines, f"no {name!r} line in:\n{output}"
    return lines[0]


# --- pure parts ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "stderr, kind",
    [
        ("RTNETLINK answers: Invalid argument\n", "a blackhole route"),
        ("RTNETLINK answers: No route to host\n", "an unreachable route"),
        ("RTNETLINK answers: Permission denied\n", "a prohibit route"),
        ("RTNETLINK answers: Network is unreachable\n", "no route at all"),
    ],
)
def test_it_names_the_route_that_drops_a_network(stderr, kind):
    status, detail = route_verdict(2, "", stderr)

    assert status == FAIL and detail.startswith(kind)


def test_it_shows_where_a_routed_network_goes():
    stdout = '[{"dst":"192.0.2.9","gateway":"192.0.2.1","dev":"eth0","prefsrc":"192.0.2.2"}]'

    assert route_verdict(0, stdout, "") == (OK, "dev eth0 via 192.0.2.1 src 192.0.2.2")


def test_it_probes_a_networks_first_host():
    assert str(probe_address("198.18.4.0/24")) == "198.18.4.1"
    assert str(probe_address("198.18.4.7/32")) == "198.18.4.7"
    assert str(probe_address("2001:db8::/64")) == "2001:db8::1"


# --- the command -----------------------------------------------------------------------------
@pytest.mark.process
@pytest.mark.django_db(transaction=True)
def test_it_fails_when_the_broker_is_stopped():
    with closed_port() as port:
        result = doctor_process(*only("broker"), CELERY_BROKER_URL=f"redis://127.0.0.1:{port}/0")

    assert result.returncode == 1
    assert line_of(result.stdout, "broker").startswith("FAIL")
    assert "Connection refused" in result.stdout
    assert "check CELERY_BROKER_URL" in result.stdout
    assert "1 check(s) failed: broker" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.process
@pytest.mark.django_db(transaction=True)
def test_it_passes_with_the_broker_running():
    result = doctor_process(*only("broker", "database"))

    assert result.returncode == 0, result.stdout + result.stderr
    assert line_of(result.stdout, "broker").startswith("OK")
    assert line_of(result.stdout, "database").startswith("OK")


@pytest.mark.process
def test_it_fails_when_the_database_is_down_and_skips_what_needs_it():
    with closed_port() as port:
        result = doctor_process(
            *only("database", "beat", "routes"), DATABASE_URL=f"mysql://root@127.0.0.1:{port}/x"
        )

    assert result.returncode == 1
    assert line_of(result.stdout, "database").startswith("FAIL")
    assert "check DATABASE_URL" in result.stdout
    assert line_of(result.stdout, "beat").startswith("WARN")
    assert "not checked: the database is unreachable" in line_of(result.stdout, "routes")


@pytest.mark.celery
def test_it_fails_a_zone_queue_that_no_worker_consumes(celery_workers):
    call_command("scope", "add", "198.18.200.0/24", "--zone", "internal")
    call_command("scope", "add", "198.18.201.0/24", "--zone", "external")
    celery_workers.start("sweep", "sweep.internal")
    celery_workers.start("general", "fingerprint,default")

    passed, output = doctor_here(*only("consumers"))

    assert not passed
    assert line_of(output, "queue sweep.internal").startswith("OK")
    assert "consumed by sweep@test" in output
    assert line_of(output, "queue sweep.external").startswith("FAIL")
    assert "portmon-sweep@sweep.external" in output
    assert line_of(output, "queue fingerprint").startswith("OK")
    assert "1 check(s) failed: queue sweep.external" in output


@pytest.mark.process
@pytest.mark.django_db(transaction=True)
def test_it_fails_when_nmap_is_missing(tmp_path):
    (tmp_path / "bin").mkdir()  # a PATH with neither nmap nor masscan

    result = doctor_process(*only("tools"), PATH=str(tmp_path / "bin"))

    assert result.returncode == 1
    assert line_of(result.stdout, "nmap").startswith("FAIL")
    assert "apt-get install nmap" in result.stdout
    # Without masscan a node still scans, with the connect engine: a warning only.
    assert line_of(result.stdout, "masscan").startswith("WARN")
    assert "1 check(s) failed: nmap" in result.stderr


@pytest.mark.process
@pytest.mark.django_db(transaction=True)
def test_it_reports_tool_versions_and_the_capability():
    result = doctor_process(*only("tools"))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Nmap version" in line_of(result.stdout, "nmap")
    assert "CAP_NET_RAW present" in line_of(result.stdout, "masscan")  # tests run as root


@pytest.mark.process
@pytest.mark.django_db(transaction=True)
def test_it_warns_that_a_worker_without_cap_net_raw_cannot_run_masscan(nobody_dir):
    # The same command as an unprivileged user with no capabilities at all.
    result = doctor_process(
        *only("tools"),
        as_user=as_nobody("-all", nobody_dir / "stage"),
        PORTMON_DATA_DIR=str(nobody_dir),
        SECRET_KEY="doctor-test",
        HOME=str(nobody_dir),
    )

    assert result.returncode == 0, result.stdout + result.stderr
    masscan_line = line_of(result.stdout, "masscan")
    assert masscan_line.startswith("WARN") and "lacks CAP_NET_RAW" in masscan_line
    assert "AmbientCapabilities=CAP_NET_RAW" in result.stdout


def test_it_fails_when_smtp_is_unreachable(settings):
    with closed_port() as port:
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
        passed, output = doctor_here(*only("smtp"))

    assert not passed
    assert line_of(output, "smtp").startswith("FAIL")
    assert f"127.0.0.1:{port} unreachable" in output
    assert "check EMAIL_HOST/EMAIL_PORT" in output


def test_it_passes_when_smtp_answers(settings):
    server = SmtpServer(free_port())
    server.start()
    try:
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", server.port
        passed, output = doctor_here(*only("smtp"))
    finally:
        server.stop()

    assert passed, output
    assert line_of(output, "smtp").startswith("OK")


@pytest.mark.django_db
@pytest.mark.parametrize("minutes_ago, status", [(1, "OK"), (30, "FAIL")])
def test_it_says_whether_beat_is_alive(minutes_ago, status):
    every, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.MINUTES)
    PeriodicTask.objects.create(
        name="reaper",
        task="scanner.reap_shards",
        interval=every,
        last_run_at=datetime.now(UTC) - timedelta(minutes=minutes_ago),
    )

    passed, output = doctor_here(*only("beat"))

    assert passed == (status == "OK")
    assert line_of(output, "beat").startswith(status)


@pytest.mark.django_db
def test_it_prints_json_and_exits_zero_with_warn_only(settings):
    import json

    with closed_port() as port:
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
        passed, output = doctor_here("--json", "--warn-only", *only("smtp", "disk"))

    assert passed
    checks = {c["name"]: c for c in json.loads(output)}
    assert checks["smtp"]["status"] == "FAIL" and checks["smtp"]["hint"]
    assert checks["disk"]["status"] == "OK"


def test_it_refuses_an_unknown_check_in_one_line():
    with pytest.raises(CommandError, match="unknown check 'nmap'; choose from database"):
        call_command("doctor", "--skip", "nmap")


@pytest.mark.lab
@pytest.mark.django_db(transaction=True)
def test_it_fails_a_network_whose_route_is_a_blackhole():
    from tests.lab import Lab
    from tests.lab.lab import BLACKHOLE_PROBE

    # The running lab guarantees the root namespace's blackhole for 198.18.0.0/15 (it checks
    # that BLACKHOLE_PROBE is dropped) and routes its own /24 to its namespace.
    blackholed = f"{BLACKHOLE_PROBE.rsplit('.', 1)[0]}.0/24"
    with Lab(hosts=1, ports_per_host=(1, 1), seed=5) as lab:
        call_command("scope", "add", lab.cidr, "--zone", "internal")
        call_command("scope", "add", blackholed, "--zone", "internal")

        passed, output = doctor_here(*only("routes"))

    assert not passed
    assert line_of(output, f"route {lab.cidr}").startswith("OK")
    assert f"dev {lab.interface}" in line_of(output, f"route {lab.cidr}")
    assert line_of(output, f"route {blackholed}").startswith("FAIL")
    assert "a blackhole route" in line_of(output, f"route {blackholed}")


@pytest.mark.django_db
def test_it_fails_a_clock_far_from_the_database_servers():
    from django.db import connection

    from scanner.doctor import check_clock

    [skewed] = check_clock(now=datetime.now(UTC) + timedelta(minutes=5))
    [right] = check_clock()

    if connection.vendor == "mysql":
        assert skewed.status == FAIL and "NTP" in skewed.hint
        assert right.status == OK
    else:  # SQLite is a file on this node: one clock, nothing to compare
        assert skewed.status == right.status == OK
