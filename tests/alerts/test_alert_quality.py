"""A generated month imported day by day: the alerts match the known changes (>= 0.99)."""

from tests.alerts.month import NET, month_generate, month_import


def test_it_alerts_on_the_month_s_known_changes_and_nothing_else(db, tmp_path):
    from scanner.models import Network

    Network.objects.create(cidr=NET, zone="internal")
    month = month_generate(tmp_path / "month", hosts=300, days=30, seed=15)
    score = month_import(month)
    print(score.report())
    assert len(score.expected) > 50  # the month has changes to find
    assert score.precision >= 0.99 and score.recall >= 0.99, score.report()


def test_the_pacing_test_s_month_scores_exactly_in_process(db, tmp_path):
    """tests/alerts/test_pacing.py compares each pacing with this month's known changes."""
    from scanner.models import Network
    from tests.alerts.test_pacing import HOSTS

    Network.objects.create(cidr=NET, zone="internal")
    month = month_generate(tmp_path / "month", hosts=HOSTS, days=30, seed=25)
    score = month_import(month)
    assert score.actual == month.expected, score.report()
