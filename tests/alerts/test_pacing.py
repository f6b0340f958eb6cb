"""Pacing invariance: the same month gives the same events however its files reach the diff.

Real worker processes diff the runs (tests/conftest.py `celery_workers`); the imports are
dated by their files. Before, the imports wrote the current port state at once and the
diffs read it later: with the worker at concurrency 1 and the imports back to back, ports
first seen on day 28 were "closed" on day 23; at concurrency 4 diffs also overlapped.
"""

import pytest

from tests.alerts.month import NET, month_generate, month_import

HOSTS = 120


@pytest.mark.celery
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "pacing, concurrency",
    [
        ("one_by_one", 1),
        ("all_at_once", 1),
        ("all_at_once", 4),
        ("worker_later", 2),
        ("shuffled_later", 2),
    ],
)
def test_the_month_s_events_do_not_depend_on_how_fast_runs_arrive(
    pacing, concurrency, celery_workers, tmp_path
):
    from alerts.models import HighRiskPort
    from scanner.models import Network

    # Migration data an earlier transactional test's flush may have removed.
    for port in (5432, 6379):
        HighRiskPort.objects.get_or_create(proto="tcp", port=port)
    Network.objects.create(cidr=NET, zone="internal")
    month = month_generate(tmp_path / "month", hosts=HOSTS, days=30, seed=25)

    def start_worker():
        celery_workers.start("general", "default", concurrency=concurrency)

    score = month_import(month, pacing=pacing, start_worker=start_worker, timeout=300)
    print(score.report())
    assert len(month.expected) > 20
    # This month's in-process import raises exactly its known changes (test_alert_quality
    # scores the bigger months): any difference here is the pacing's doing.
    assert score.actual == month.expected, score.report()
    log = celery_workers.log("general")
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]
