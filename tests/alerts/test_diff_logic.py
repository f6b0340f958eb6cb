"""The pure diff rules, without a database."""

from datetime import UTC, datetime, timedelta

import pytest

from alerts.diff import (
    Fingerprint,
    Sighting,
    coverage_parse,
    fingerprint_changed,
    is_degraded,
    miss_outcome,
    sighting_events,
)

JUNE_17 = datetime(2026, 6, 17, 2, tzinfo=UTC)
WINDOW = timedelta(days=3)


def kinds(s: Sighting) -> list[str]:
    return [kind for kind, _ in sighting_events(s, at=JUNE_17, window=WINDOW)]


def test_it_keeps_quiet_about_a_port_seen_two_days_ago_and_missed_yesterday():
    june_15 = JUNE_17 - timedelta(days=2)
    assert kinds(Sighting(high_risk=False, prev_seen=june_15, missed_before=1)) == []


def test_it_calls_a_never_seen_port_new():
    assert kinds(Sighting(high_risk=False, prev_seen=None)) == ["new_port"]


def test_it_calls_a_port_missed_for_longer_than_the_window_new():
    four_days = JUNE_17 - timedelta(days=4)
    assert kinds(Sighting(high_risk=False, prev_seen=four_days, missed_before=2)) == ["new_port"]


def test_it_does_not_call_a_port_new_when_no_healthy_run_missed_it():
    # Weekly scans, or a week of degraded runs: the gap is not evidence of a change.
    week = JUNE_17 - timedelta(days=7)
    assert kinds(Sighting(high_risk=False, prev_seen=week, missed_before=0)) == []


def test_it_alerts_a_high_risk_port_back_after_one_miss():
    yesterday = JUNE_17 - timedelta(days=1)
    assert kinds(Sighting(high_risk=True, prev_seen=yesterday, missed_before=1)) == ["high_risk"]
    assert kinds(Sighting(high_risk=True, prev_seen=yesterday, missed_before=0)) == []


def test_it_reports_a_closed_port_coming_back_as_reopened():
    old = JUNE_17 - timedelta(days=9)
    assert kinds(Sighting(high_risk=False, prev_seen=old, missed_before=5, was_closed=True)) == [
        "reopened"
    ]
    assert kinds(Sighting(high_risk=True, prev_seen=old, missed_before=5, was_closed=True)) == [
        "high_risk"
    ]


def test_it_adds_a_service_change_with_old_and_new():
    s = Sighting(
        high_risk=False,
        prev_seen=JUNE_17 - timedelta(days=1),
        old_fp=Fingerprint("http", "nginx"),
        new_fp=Fingerprint("mysql", "MySQL", "8.0"),
    )
    [(kind, detail)] = sighting_events(s, at=JUNE_17, window=WINDOW)
    assert kind == "service_changed"
    assert detail["old"]["label"] == "http nginx"
    assert detail["new"]["label"] == "mysql MySQL 8.0"


@pytest.mark.parametrize(
    ("old", "new", "changed"),
    [
        (Fingerprint("http", "nginx", "1.18"), Fingerprint("http", "nginx", "1.20"), False),
        (Fingerprint("http", "nginx"), Fingerprint("http", "Apache httpd"), True),
        (Fingerprint("http"), Fingerprint("mysql"), True),
        (Fingerprint("http", "nginx"), Fingerprint("", ""), False),
        (None, Fingerprint("mysql"), False),
    ],
)
def test_it_detects_fingerprint_changes(old, new, changed):
    assert fingerprint_changed(old, new) is changed


def test_it_reads_a_runs_coverage():
    cov = coverage_parse("198.18.0.0/30, 198.18.1.7\nexample.org", "22,80,1000-2000")
    assert cov.covers_ip("198.18.0.2") and cov.covers_ip("198.18.1.7")
    assert not cov.covers_ip("198.18.1.8")
    assert cov.covers_port(1500) and not cov.covers_port(81)
    assert coverage_parse("198.18.0.1/32", "1-65535").only_addresses
    assert cov.names == {"example.org"}


def test_it_covers_no_port_when_the_port_list_is_unreadable():
    assert not coverage_parse("198.18.0.1", "all").covers_port(22)


def test_it_judges_a_run_degraded_against_the_median():
    baseline = [(100, 1000), (98, 990), (101, 1010), (10, 50)]
    assert is_degraded(hosts_found=99, ports_found=400, baseline=baseline, ratio=0.5)
    assert is_degraded(hosts_found=20, ports_found=990, baseline=baseline, ratio=0.5)
    assert not is_degraded(hosts_found=99, ports_found=600, baseline=baseline, ratio=0.5)
    # Not enough history yet: no verdict.
    assert not is_degraded(hosts_found=0, ports_found=0, baseline=baseline[:2], ratio=0.5)


def test_it_closes_on_the_nth_miss():
    assert miss_outcome(missed_before=0, closed_after=3) == (1, False)
    assert miss_outcome(missed_before=2, closed_after=3) == (3, True)


def test_it_treats_only_never_covered_or_still_learnt_ports_as_baseline():
    from alerts.diff import Span, first_covered, is_baseline, span_redundant

    t0 = datetime(2026, 6, 10, tzinfo=UTC)
    window = timedelta(days=3)
    # A /24 scanned on ports 1-1024 from t0, on every port from t0 + 9 days.
    net = (3323068416, 3323068671)
    spans = [Span(t0, (net,), ((1, 1024),)), Span(t0 + timedelta(days=9), (net,), ((1, 65535),))]
    host = 3323068516
    assert first_covered(spans, host, 22) == t0
    assert first_covered(spans, host, 8080) == t0 + timedelta(days=9)
    assert first_covered(spans, 3323068672, 22) is None  # outside the addresses
    # Never covered: baseline, whether or not the host ever answered.
    assert is_baseline(first_covered=None, at=t0, window=window)
    # Covered for the first time less than the window ago: still learnt.
    assert is_baseline(first_covered=t0, at=t0 + timedelta(days=2), window=window)
    # Covered long ago: a port there (even on a host never seen) is news...
    assert not is_baseline(first_covered=t0, at=t0 + timedelta(days=3), window=window)
    # ...unless the network's baseline is per host and the host never answered.
    assert is_baseline(first_covered=t0, at=t0 + timedelta(days=3), window=window, host_first=True)
    # A daily run repeating the coverage adds no span; a wider one does.
    same = Span(t0 + timedelta(days=10), (net,), ((1, 65535),))
    assert span_redundant(spans, same)
    assert not span_redundant(
        spans, Span(t0 + timedelta(days=10), ((net[0], net[1] + 256),), ((1, 10),))
    )
    assert not span_redundant(spans, Span(t0 - timedelta(days=1), (net,), ((1, 10),)))
