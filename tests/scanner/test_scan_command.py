"""manage.py scan: bad options refused in one line; exit codes say how the run ended."""

import ipaddress
import os
import subprocess
import sys
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from scanner.engines import EngineError, connect
from scanner.models import RunState, ScanRun
from tests.scanner.test_pipeline import Listeners, free_ports

ROOT = Path(__file__).resolve().parents[2]


def eager() -> tuple[bool, bool]:
    from portmon.celery import app

    return app.conf.task_always_eager, app.conf.task_eager_propagates


def scan(*args):
    """Run scan in this process; (exit code, stdout, one-line error or '')."""
    out = StringIO()
    try:
        call_command("scan", *args, stdout=out)
    except CommandError as exc:
        return exc.returncode, out.getvalue(), str(exc)
    return 0, out.getvalue(), ""


@pytest.mark.process
def test_it_refuses_bad_numbers_from_the_shell_in_one_line(tmp_path):
    env = {**os.environ, "PORTMON_DATA_DIR": str(tmp_path)}
    env.pop("DATABASE_URL", None)
    env.pop("CELERY_BROKER_URL", None)  # nothing must be queued; if it were, into tmp_path
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], env=env, check=True, cwd=ROOT)
    subprocess.run(
        [*manage, "scope", "add", "127.0.0.0/8", "--zone", "internal"],
        env=env,
        check=True,
        cwd=ROOT,
    )
    for option, value in [
        ("--timeout", "-1"),
        ("--timeout", "nan"),
        ("--timeout", "inf"),
        ("--timeout", "soon"),
        ("--rate", "5"),
        ("--rate", "100000000000"),
        ("--rate", "1e5"),
    ]:
        out = subprocess.run(
            [*manage, "scan", "127.0.0.1", "--ports", "22", option, value],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,  # the old code waited forever on --timeout nan
        )
        # Exit 1 like any refused input: 2 means "degraded" for this command.
        assert out.returncode == 1, (option, value, out.stderr)
        (line,) = out.stderr.splitlines()
        assert line.startswith("CommandError: ") and option in line, line
    listed = subprocess.run(
        [
            *manage,
            "shell",
            "-v0",
            "-c",
            "from scanner.models import ScanRun as R; print(R.objects.count())",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert listed.stdout.strip() == "0", listed.stdout + listed.stderr  # no run was planned


@pytest.mark.django_db
def test_it_refuses_a_port_list_too_long_to_store(settings):
    call_command("scope", "add", "127.0.0.0/8", "--zone", "internal")
    ports = ",".join(str(p) for p in range(1, 400, 2))
    code, _, error = scan("127.0.0.1", "--ports", ports, "--timeout", "1")
    assert code == 1 and "too many separate port ranges" in error and "\n" not in error
    assert not ScanRun.objects.exists()


@pytest.mark.django_db
def test_it_exits_4_when_it_stops_waiting():
    call_command("scope", "add", "127.0.0.0/8", "--zone", "internal")
    # No worker and nothing queued (the test transaction never commits): the run never moves.
    code, _, error = scan("127.0.0.2", "--ports", "22", "--timeout", "0.5")
    assert code == 4 and "not finished after 0.5s" in error


def test_it_exits_0_for_a_healthy_run(transactional_db):
    call_command("scope", "add", "127.0.0.0/8", "--zone", "internal")
    (port,) = free_ports(1, "127.0.0.2")
    with Listeners([("127.0.0.2", port, b"")]):
        code, out, error = scan(
            "127.0.0.2", "--ports", str(port), "--engine", "connect", "--no-fingerprint", "--local"
        )
    assert (code, error) == (0, "")
    assert f"{port:>5}/tcp" in out and "1 open port(s) on 1 host(s)" in out
    # --local ran the tasks here for the command only: the process's Celery app is as it was.
    assert eager() == (False, False)


def test_it_exits_2_with_results_and_the_reason_when_a_shard_failed(
    transactional_db, settings, monkeypatch
):
    settings.PORTMON_SHARD_PROBES = 1  # one shard per host
    settings.PORTMON_SHARD_MAX_ATTEMPTS = 1
    call_command("scope", "add", "127.0.0.0/8", "--zone", "internal")
    real_sweep = connect.sweep

    def sweep_failing_on_3(options, events):
        if any(ipaddress.ip_address("127.0.0.3") in net for net in options.targets):
            raise EngineError("too many open files")
        return real_sweep(options, events)

    monkeypatch.setattr(connect, "sweep", sweep_failing_on_3)
    (port,) = free_ports(1, "127.0.0.2")
    with Listeners([("127.0.0.2", port, b"")]):
        code, out, error = scan(
            "127.0.0.2",
            "127.0.0.3",
            "--ports",
            str(port),
            "--engine",
            "connect",
            "--no-fingerprint",
            "--local",
        )
    assert code == 2
    assert "1 open port(s) on 1 host(s)" in out  # what was found is still printed
    assert "degraded: 1 of 2 shard(s) failed: shard 1 failed: too many open files" in error
    assert "\n" not in error


def test_it_exits_2_when_the_run_found_far_fewer_ports_than_usual(transactional_db):
    call_command("scope", "add", "127.0.0.0/8", "--zone", "internal")
    day = timezone.now() - timedelta(days=3)
    for i in range(3):  # three healthy runs of the same kind found 40 ports on 4 hosts
        at = day + timedelta(hours=i)
        ScanRun.objects.create(
            targets="127.0.0.0/29",
            state=RunState.FINISHED,
            created_at=at,
            finished_at=at,
            diffed_at=at,
            hosts_found=4,
            ports_found=40,
        )
    (port,) = free_ports(1, "127.0.0.2")
    with Listeners([("127.0.0.2", port, b"")]):
        code, out, error = scan(
            "127.0.0.2", "--ports", str(port), "--engine", "connect", "--no-fingerprint", "--local"
        )
    assert code == 2 and "1 open port(s)" in out
    assert "far fewer" in error and "\n" not in error


def test_it_exits_3_when_the_run_was_cancelled(transactional_db, monkeypatch):
    call_command("scope", "add", "127.0.0.0/8", "--zone", "internal")

    def cancelled_meanwhile(options, events):
        # An operator cancels the run (admin) while the shard is sweeping.
        ScanRun.objects.update(state=RunState.CANCELLED, error="cancelled by operator")
        return []

    monkeypatch.setattr(connect, "sweep", cancelled_meanwhile)
    code, out, error = scan(
        "127.0.0.2", "--ports", "22", "--engine", "connect", "--no-fingerprint", "--local"
    )
    assert code == 3 and out == ""
    assert error.endswith("ended cancelled: cancelled by operator")
    assert eager() == (False, False)  # put back on the way out by an error too
