"""A network's first run is a baseline: recorded, not announced (high risk and deny rules
still alert); the digest says so in one line."""

from collections import Counter

import pytest
from django.utils import timezone

from alerts.models import AlertEvent, Rule
from alerts.notify.services.digest import digest_prepare, digest_render
from alerts.services.diff import run_diff
from scanner.findings import Finding
from scanner.models import Network, ScanRun
from scanner.signals import run_finished
from tests.alerts.conftest import NET, _diff_now, at, import_run


def first_scan() -> list[Finding]:
    """A network's first scan: 40 hosts with ssh and a web server, one Redis, one Telnet."""
    found = [Finding(f"198.18.0.{i}", p) for i in range(1, 41) for p in (22, 443)]
    return [*found, Finding("198.18.0.7", 6379), Finding("198.18.0.9", 2323)]


@pytest.fixture
def network(db, settings):
    settings.SITE_URL = "http://portmon.test"
    settings.PORTMON_DIGEST_RECIPIENTS = ["sec-team@example.com"]
    run_finished.connect(_diff_now, dispatch_uid="tests.baseline_diff_now")
    try:
        yield Network.objects.create(cidr=NET, zone="internal", owner_email="o@example.com")
    finally:
        run_finished.disconnect(dispatch_uid="tests.baseline_diff_now")


def day(n: int, findings) -> ScanRun:
    return import_run(findings=findings, at=at(n), targets=NET, ports="1-65535")


def kinds(run: ScanRun) -> Counter:
    return Counter(AlertEvent.objects.filter(run=run).values_list("kind", flat=True))


def test_it_records_a_network_s_first_run_as_a_baseline(network):
    Rule.objects.create(
        action="deny", port_lo=2323, reason="no telnet on any port", owner="sec-team"
    )
    run = day(0, first_scan())
    # 82 ports, none announced as new; the high-risk Redis and the denied port still alert.
    assert kinds(run) == Counter({"high_risk": 1, "blacklisted": 1})
    assert AlertEvent.objects.get(kind="high_risk").port == 6379
    assert AlertEvent.objects.get(kind="blacklisted").immediate

    _, text, html = digest_render(
        digest=digest_prepare(
            recipient="sec-team@example.com",
            network_ids=None,
            channel="email",
            now=timezone.now(),
        )
    )
    line = f"baseline: 82 ports on 40 hosts recorded for {NET}"
    assert line in text and line in html
    assert text.count("baseline:") == 1


def test_it_alerts_new_hosts_after_the_baseline_unless_the_network_says_otherwise(network):
    day(0, first_scan())
    # Within the new-port window (3 days) the baseline is still learnt: a host the first
    # scan missed entirely is part of it.
    missed = day(1, [*first_scan(), Finding("198.18.0.99", 8080)])
    assert kinds(missed) == Counter()
    run = day(3, [*first_scan(), Finding("198.18.0.100", 8080)])
    assert kinds(run) == Counter({"new_port": 1})

    Network.objects.filter(pk=network.pk).update(baseline_scope="host")
    run = day(4, [*first_scan(), Finding("198.18.0.100", 8080), Finding("198.18.0.101", 8080)])
    assert kinds(run) == Counter()
    assert run.baseline[0]["ports"] == 1


def test_it_takes_the_first_healthy_run_as_the_baseline_not_a_degraded_one(network):
    run = import_run(findings=first_scan()[:3], at=at(0), targets=NET, ports="1-65535", send=False)
    ScanRun.objects.filter(pk=run.pk).update(degraded=True)  # e.g. a shard failed
    run_diff(run_id=run.pk)
    network.refresh_from_db()
    assert network.baselined_at is None and kinds(run) == Counter()

    run = day(1, first_scan())
    network.refresh_from_db()
    assert network.baselined_at == at(1)
    assert kinds(run) == Counter({"high_risk": 1})


def test_it_learns_a_baseline_for_the_new_port_window(network):
    # The first scan missed 198.18.0.7:8080 (scans miss ports): seen the day after, it is
    # part of the baseline, not news; a port opening after the window is.
    day(0, first_scan())
    quiet = day(1, [*first_scan(), Finding("198.18.0.7", 8080)])
    day(2, [*first_scan(), Finding("198.18.0.7", 8080)])
    news = day(3, [*first_scan(), Finding("198.18.0.7", 8080), Finding("198.18.0.7", 8443)])
    assert kinds(quiet) == Counter() and quiet.baseline[0]["ports"] == 1
    assert kinds(news) == Counter({"new_port": 1})
