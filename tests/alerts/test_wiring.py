"""How the diff is triggered, and that its cost does not grow per port in queries."""

from django.db import connection
from django.test.utils import CaptureQueriesContext

from alerts.models import AlertEvent
from alerts.services.diff import run_diff
from scanner.findings import Finding
from scanner.services.results import run_import
from tests.alerts.conftest import NET, at, import_run


def test_it_diffs_a_run_as_soon_as_the_scanner_records_it(timeline):
    run = run_import(findings=[Finding("198.18.0.7", 3389)], at=at(0), targets=NET)

    run.refresh_from_db()
    assert run.diffed_at is not None
    assert AlertEvent.objects.get(run=run).kind == "high_risk"


def test_it_keeps_the_scan_and_queues_a_retry_when_the_diff_fails(timeline, monkeypatch):
    import alerts.receivers
    from alerts import tasks

    queued = []

    def broken(*, run_id):
        raise RuntimeError("database hiccup")

    monkeypatch.setattr(alerts.receivers, "run_diff", broken)
    monkeypatch.setattr(tasks.diff_run, "apply_async", lambda **kw: queued.append(kw))

    run = run_import(findings=[Finding("198.18.0.7", 8080)], at=at(0), targets=NET)

    run.refresh_from_db()
    assert run.state == "finished" and run.diffed_at is None
    assert queued == [{"args": [run.pk], "countdown": 60}]
    # The retry (the task's body) then does the work once.
    assert tasks.diff_run.run(run.pk)["created"] == {"new_port": 1}
    assert tasks.diff_run.run(run.pk) is None


def _diff_queries(hosts: list[str], ports: int) -> int:
    """Queries of the diff of a second day that sees the same ports plus one new one."""
    findings = [Finding(ip, 20000 + p) for ip in hosts for p in range(ports)]
    targets = ",".join(hosts)
    import_run(findings=findings, at=at(0), targets=targets, ports="1-65535")
    findings.append(Finding(hosts[0], 30000))
    run = import_run(findings=findings, at=at(1), targets=targets, ports="1-65535", send=False)
    with CaptureQueriesContext(connection) as ctx:
        result = run_diff(run_id=run.pk)
    assert result.seen == len(hosts) * ports + 1
    assert result.created == {"new_port": 1}
    return len(ctx.captured_queries)


def test_it_uses_the_same_number_of_queries_for_10_or_1000_ports(timeline):
    small = _diff_queries([f"198.18.0.{h}" for h in range(1, 6)], ports=2)
    large = _diff_queries([f"198.18.0.{h}" for h in range(100, 200)], ports=10)
    assert large == small


def test_it_announces_new_events_after_commit(timeline, django_capture_on_commit_callbacks):
    from alerts.services.diff import diff_finished

    heard = []

    def listener(sender, run_id, event_ids, **kwargs):
        heard.append((run_id, event_ids))

    diff_finished.connect(listener)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            run = run_import(findings=[Finding("198.18.0.7", 6379)], at=at(0), targets=NET)
    finally:
        diff_finished.disconnect(listener)

    assert heard == [(run.pk, [AlertEvent.objects.get(run=run).pk])]
