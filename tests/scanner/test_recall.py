"""Recall: a port missed by a sweep but seen recently is re-probed before the run ends."""

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from portmon.celery import app
from scanner.engines import connect
from scanner.models import PortObservation, RunState
from scanner.services.runs import run_start
from tests.scanner.test_pipeline import Listeners, free_ports


@pytest.fixture
def eager(settings):
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


def scan(ports: str):
    return run_start(targets="127.0.0.30", ports=ports, engine="connect", fingerprint=False)


def test_it_reprobes_a_recent_port_the_sweep_missed(
    db, eager, monkeypatch, django_capture_on_commit_callbacks
):
    call_command("scope", "add", "127.0.0.0/8", "--zone", "internal")
    kept, lost, gone = free_ports(3, "127.0.0.30")
    ports = ",".join(str(p) for p in (kept, lost, gone))
    listeners = Listeners([("127.0.0.30", p, b"") for p in (kept, lost, gone)])
    with listeners, django_capture_on_commit_callbacks(execute=True):
        first = scan(ports)
    first.refresh_from_db()
    assert first.state == RunState.FINISHED and first.ports_found == 3

    # Second run: the sweep "loses" one port (a dropped SYN); another port really closed.
    real_sweep = connect.sweep

    def lossy_sweep(options, events):
        return [f for f in real_sweep(options, events) if f.port != lost]

    monkeypatch.setattr(connect, "sweep", lossy_sweep)
    with Listeners([("127.0.0.30", p, b"") for p in (kept, lost)]):
        with django_capture_on_commit_callbacks(execute=True):
            second = scan(ports)
    seen = set(PortObservation.objects.filter(run=second).values_list("port", flat=True))
    assert seen == {kept, lost}


def test_it_explains_bad_scan_arguments_in_one_line(db):
    call_command("scope", "add", "127.0.0.0/8", "--zone", "internal")
    with pytest.raises(CommandError, match=r"^198.19.0.1/32 is outside the configured scope"):
        call_command("scan", "198.19.0.1", "--ports", "22")
    with pytest.raises(CommandError, match="is not a port or port range"):
        call_command("scan", "127.0.0.1", "--ports", "ssh")


@pytest.mark.process
def test_it_scans_and_fingerprints_ipv6_targets(db, eager, django_capture_on_commit_callbacks):
    from tests.scanner.test_pipeline import SSH_BANNER

    call_command("scope", "add", "::1/128", "--zone", "internal")
    (port,) = free_ports(1, "::1")
    with Listeners([("::1", port, SSH_BANNER)]), django_capture_on_commit_callbacks(execute=True):
        run = run_start(targets="::1", ports=f"{port},1-50", engine="auto")
    run.refresh_from_db()
    assert run.state == RunState.FINISHED, run.error
    (obs,) = PortObservation.objects.filter(run=run).select_related("host")
    assert (obs.host.ip, obs.port, obs.service) == ("::1", port, "ssh")
