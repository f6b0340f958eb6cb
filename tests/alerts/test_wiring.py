"""How the diff is triggered, and that its cost does not grow per port in queries."""

import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from alerts.models import AlertEvent
from alerts.services.diff import run_diff
from scanner.findings import Finding
from scanner.services.results import run_import
from tests.alerts.conftest import NET, at, import_run


def test_it_diffs_a_run_on_a_worker_once_the_scanner_committed_it(
    lab_network, celery_eager, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as committed:
        run = run_import(findings=[Finding("198.18.0.7", 3389)], at=at(0), targets=NET)
        # The scanner's own transaction (in production: the last fingerprint task) does
        # not diff: a slow diff no longer holds a fingerprint worker.
        assert run.diffed_at is None and not AlertEvent.objects.exists()

    for callback in committed:
        callback()  # the commit queues alerts.diff_run; run eagerly here

    run.refresh_from_db()
    assert run.diffed_at is not None
    assert AlertEvent.objects.get(run=run).kind == "high_risk"


def test_it_keeps_the_scan_when_the_diff_cannot_be_queued_and_diffs_it_later(
    lab_network, monkeypatch, django_capture_on_commit_callbacks
):
    from kombu.exceptions import OperationalError

    from alerts import tasks
    from alerts.services.diff import diffs_pending_run

    def broker_down(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(tasks.diff_run, "delay", broker_down)

    with django_capture_on_commit_callbacks(execute=True):
        run = run_import(findings=[Finding("198.18.0.7", 8080)], at=at(0), targets=NET)

    run.refresh_from_db()
    assert run.state == "finished" and run.diffed_at is None
    # The beat backstop (alerts.diff_pending) diffs it, once.
    assert diffs_pending_run() == [run.pk]
    assert AlertEvent.objects.get(run=run).kind == "new_port"
    assert tasks.diff_run.run(run.pk) is None


@pytest.mark.celery
def test_it_diffs_a_finished_run_on_a_real_worker(celery_workers):
    from alerts.models import HighRiskPort
    from scanner.models import Network

    Network.objects.create(cidr=NET, zone="internal")
    # An earlier transactional test's flush may have emptied the seeded list.
    HighRiskPort.objects.get_or_create(proto="tcp", port=6379)
    celery_workers.start("general", "default")

    run = run_import(findings=[Finding("198.18.0.7", 6379)], at=at(0), targets=NET)

    deadline = time.monotonic() + 60
    while run.diffed_at is None:
        assert time.monotonic() < deadline, celery_workers.log("general")[-3000:]
        time.sleep(0.2)
        run.refresh_from_db()
    assert AlertEvent.objects.get(run=run).kind == "high_risk"
    log = celery_workers.log("general")
    assert "alerts.diff_run" in log and "Traceback" not in log


def _diff_queries(hosts: list[str], ports: int, day: int) -> int:
    """Queries of the diff of a second day that sees the same ports plus one new one."""
    findings = [Finding(ip, 20000 + p) for ip in hosts for p in range(ports)]
    targets = ",".join(hosts)
    # Days after any earlier call's: an older day would be a back-fill, which is not diffed.
    import_run(findings=findings, at=at(day), targets=targets, ports="1-65535")
    findings.append(Finding(hosts[0], 30000))
    run = import_run(
        findings=findings, at=at(day + 1), targets=targets, ports="1-65535", send=False
    )
    with CaptureQueriesContext(connection) as ctx:
        result = run_diff(run_id=run.pk)
    assert result.seen == len(hosts) * ports + 1
    assert result.created == {"new_port": 1}
    return len(ctx.captured_queries)


def test_it_uses_the_same_number_of_queries_for_10_or_1000_ports(timeline):
    small = _diff_queries([f"198.18.0.{h}" for h in range(1, 6)], ports=2, day=0)
    large = _diff_queries([f"198.18.0.{h}" for h in range(100, 200)], ports=10, day=2)
    assert large == small


def test_it_announces_new_events_after_commit(
    lab_network, celery_eager, django_capture_on_commit_callbacks
):
    from alerts.signals import events_raised

    heard = []

    def listener(sender, event_ids, run_id, **kwargs):
        heard.append((run_id, event_ids))

    events_raised.connect(listener)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            run = run_import(findings=[Finding("198.18.0.7", 6379)], at=at(0), targets=NET)
    finally:
        events_raised.disconnect(listener)

    assert heard == [(run.pk, [AlertEvent.objects.get(run=run).pk])]
