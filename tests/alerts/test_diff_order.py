"""Diffs go in the order runs finished, whoever asks first; a broken run cannot stop them."""

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from alerts.models import AlertEvent
from alerts.services import diff as diff_service
from alerts.services.diff import run_diff
from scanner.findings import Finding
from scanner.models import Port, ScanRun
from tests.alerts.conftest import BACKGROUND, HOST, NET, at, import_run


def recorded(day: int, *findings: Finding) -> ScanRun:
    """A run recorded and not diffed yet (its worker has not run)."""
    return import_run(
        findings=[*BACKGROUND, *findings], at=at(day), targets=NET, ports="1-65535", send=False
    )


def test_the_diff_of_a_later_run_diffs_the_earlier_ones_first(lab_network):
    runs = [recorded(day, Finding(HOST, 8080)) for day in (0, 1, 2)]
    # Day 3 arrives (and is asked for) first; 8080 is gone from it.
    last = recorded(3)
    assert not Port.objects.exists()  # recording writes observations only
    result = run_diff(run_id=last.pk)
    assert result.run_id == last.pk and result.missed == 1
    order = list(ScanRun.objects.order_by("diffed_at", "pk").values_list("pk", flat=True))
    assert order == [r.pk for r in [*runs, last]]
    # Day 0 found 8080 new (one event), the days after it said nothing more; day 3 counted
    # one miss (not three: no later run was read as if it were earlier).
    events = AlertEvent.objects.filter(host__ip=HOST).values_list("kind", "run_id")
    assert list(events) == [("new_port", runs[0].pk)]
    assert Port.objects.get(host__ip=HOST, port=8080).missed_runs == 1
    # Asking again for an earlier run: already diffed by that turn.
    assert run_diff(run_id=runs[1].pk) is None


def test_a_run_whose_diff_fails_is_marked_and_passed(lab_network, monkeypatch):
    broken, good = recorded(0, Finding(HOST, 8080)), recorded(1, Finding(HOST, 8080))
    real = diff_service._run_diff

    def failing(*, run):
        if run.pk == broken.pk:
            raise ValueError("a bug in the diff")
        return real(run=run)

    monkeypatch.setattr(diff_service, "_run_diff", failing)
    assert run_diff(run_id=good.pk).run_id == good.pk
    broken.refresh_from_db()
    assert broken.diffed_at is not None
    assert broken.error == "diff failed: ValueError: a bug in the diff"


def test_running_out_of_time_leaves_the_run_for_the_next_turn(lab_network, monkeypatch):
    first, second = recorded(0), recorded(1)

    def slow(*, run):
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(diff_service, "_run_diff", slow)
    with pytest.raises(SoftTimeLimitExceeded):
        run_diff(run_id=second.pk)
    first.refresh_from_db()
    assert first.diffed_at is None and first.error == ""
