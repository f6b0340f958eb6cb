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
