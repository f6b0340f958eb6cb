"""Fourteen synthetic days through the scanner's run_import: what the team is told."""

from datetime import timedelta

import pytest

from alerts.models import AlertEvent, EventAudit, EventState, Rule
from alerts.services.diff import run_diff
from alerts.services.events import event_transition
from scanner.models import Port, ScanRun
from tests.alerts.conftest import BACKGROUND, HOST, NET, at, port


def test_it_does_not_alert_a_port_missed_for_one_day(timeline):
    # The source's example: open on 15 June (day 5), missing on 16, back on 17.
    timeline.days(range(0, 6), port(8080))
    timeline.day(6)
    timeline.day(7, port(8080))

    assert timeline.kinds_on(6) == []
    assert timeline.kinds_on(7) == []
    assert [e.kind for e in timeline.events()] == ["new_port"]  # day 0 only
    assert timeline.events()[0].run == timeline.runs[0]


def test_it_alerts_a_port_never_seen_in_the_last_3_days(timeline):
    timeline.days(range(0, 5))
    timeline.day(5, port(8443))
    timeline.day(6, port(8443))

    assert timeline.kinds_on(5) == [("new_port", 8443)]
    assert timeline.kinds_on(6) == []
    event = timeline.events()[0]
    assert event.state == EventState.NEW
    assert not event.immediate
    assert event.get_absolute_url() == f"/events/{event.pk}/"


def test_it_alerts_a_port_back_after_more_than_the_window(timeline, settings):
    # Closing needs 5 misses here, so a 4-day gap is a "new" port, not a reopened one.
    settings.PORTMON_CLOSED_AFTER_RUNS = 5
    timeline.days(range(0, 3), port(8080))
    # The team looked at day 0's event and let it be; an open one would absorb a repeat.
    event_transition(event_id=timeline.events()[0].pk, to_state="ignored", at=at(1))
    timeline.days(range(3, 7))
    timeline.day(7, port(8080))

    assert timeline.kinds_on(7) == [("new_port", 8080)]
    assert "not seen for 5 days" in timeline.events(run=timeline.runs[7])[0].detail["reason"]


def test_it_uses_the_networks_own_window(timeline, settings):
    settings.PORTMON_CLOSED_AFTER_RUNS = 5
    from scanner.models import Network

    Network.objects.filter(cidr=NET).update(new_port_window_days=7)
    timeline.days(range(0, 3), port(8080))
    timeline.days(range(3, 7))
    timeline.day(7, port(8080))

    assert timeline.kinds_on(7) == []


def test_it_alerts_a_high_risk_port_at_once(timeline):
    timeline.days(range(0, 4))
    timeline.day(4, port(3306, service="mysql"), port(8080))

    assert timeline.kinds_on(4) == [("high_risk", 3306), ("new_port", 8080)]
    event = timeline.events(kind="high_risk")[0]
    assert event.immediate
    assert event.detail["high_risk"] is True
    assert event.detail["new"]["service"] == "mysql"


def test_it_alerts_a_high_risk_port_back_after_one_missed_day(timeline):
    # A normal port gets the 3-day grace; a high-risk one does not.
    timeline.days(range(0, 4))
    timeline.day(4, port(3306), port(8080))
    first = timeline.events(kind="high_risk")[0]
    event_transition(event_id=first.pk, to_state="ignored", at=at(4) + timedelta(hours=1))
    timeline.day(5)
    timeline.day(6, port(3306), port(8080))

    assert timeline.kinds_on(6) == [("high_risk", 3306)]
    assert timeline.events(run=timeline.runs[6])[0].detail["reason"] == "back"


def test_it_closes_a_port_after_3_healthy_runs_unseen(timeline):
    timeline.days(range(0, 6), port(8080))
    timeline.days(range(6, 8))

    assert timeline.kinds_on(6) == timeline.kinds_on(7) == []
    assert Port.objects.get(host__ip=HOST, port=8080).missed_runs == 2

    timeline.day(8)

    assert timeline.kinds_on(8) == [("closed", 8080)]
    p = Port.objects.get(host__ip=HOST, port=8080)
    assert (p.state, p.missed_runs) == ("closed", 3)
    timeline.days(range(9, 12))
    assert len(timeline.events(kind="closed")) == 1


def test_it_raises_no_closed_event_from_a_degraded_run(timeline):
    timeline.days(range(0, 6), port(8080))
    timeline.day(6)
    # Day 7: the scan found 1 port instead of ~11: degraded, its misses do not count.
    degraded = timeline.day(7, BACKGROUND[0], background=False)
    timeline.day(8)

    degraded.refresh_from_db()
    assert degraded.degraded
    assert not timeline.runs[8].degraded
    assert ScanRun.objects.get(pk=timeline.runs[8].pk).degraded is False
    assert AlertEvent.objects.filter(run=degraded).count() == 0
    assert timeline.kinds_on(8) == []
    assert Port.objects.get(host__ip=HOST, port=8080).state == "open"

    timeline.day(9)

    assert timeline.kinds_on(9) == [("closed", 8080)]


def test_it_creates_no_new_port_noise_after_degraded_days(timeline):
    timeline.days(range(0, 5), port(8080))
    # Four degraded days in a row (the scanner lost most of its packets).
    for n in range(5, 9):
        timeline.day(n, BACKGROUND[0], background=False)
    timeline.day(9, port(8080))

    degraded = ScanRun.objects.filter(pk__in=[timeline.runs[n].pk for n in range(5, 9)])
    assert list(degraded.values_list("degraded", flat=True)) == [True] * 4
    assert timeline.kinds_on(9) == []
    assert AlertEvent.objects.filter(run__in=[timeline.runs[n] for n in range(5, 10)]).count() == 0


def test_it_reports_a_closed_port_that_comes_back_as_reopened(timeline):
    timeline.days(range(0, 3), port(8080))
    timeline.days(range(3, 6))  # closed on day 5
    timeline.day(6)
    timeline.day(7, port(8080))

    assert timeline.kinds_on(5) == [("closed", 8080)]
    assert timeline.kinds_on(7) == [("reopened", 8080)]
    p = Port.objects.get(host__ip=HOST, port=8080)
    assert (p.state, p.missed_runs) == ("open", 0)


def test_it_reopens_a_fixed_event_when_the_port_is_seen_again(timeline):
    timeline.days(range(0, 3))
    timeline.day(3, port(8443))
    event = timeline.events()[0]
    event_transition(event_id=event.pk, to_state="fixed", at=at(3) + timedelta(hours=2))
    timeline.day(4, port(8443))

    event.refresh_from_db()
    assert event.state == EventState.REOPENED
    audit = EventAudit.objects.filter(event=event).order_by("id")
    assert [(a.action, a.from_state, a.to_state, a.actor) for a in audit] == [
        ("raised", "", "new", None),
        ("transition", "new", "fixed", None),
        ("reopened", "fixed", "reopened", None),
    ]
    assert "run" in audit.last().comment
    # Still one event for the port: the reopened one holds the open slot.
    assert len(timeline.events()) == 1


def test_it_reports_a_service_change_but_not_a_version_bump(timeline):
    timeline.days(range(0, 3), port(8080, service="http", product="nginx", version="1.18"))
    timeline.day(3, port(8080, service="http", product="nginx", version="1.20"))
    timeline.day(4, port(8080, service="mysql", product="MySQL", version="8.0"))

    assert timeline.kinds_on(3) == []
    assert timeline.kinds_on(4) == [("service_changed", 8080)]
    detail = timeline.events(kind="service_changed")[0].detail
    assert (detail["old"]["service"], detail["new"]["service"]) == ("http", "mysql")
    assert detail["old"]["label"] == "http nginx 1.20"


def test_it_lets_deny_beat_allow_and_suppresses_allowed_ports(timeline):
    allow = Rule.objects.create(action="allow", ip_cidr=NET, reason="lab", owner="ops")
    deny = Rule.objects.create(
        action="deny", port_lo=8400, port_hi=8499, proto="tcp", reason="no", owner="sec"
    )
    timeline.days(range(0, 3))
    timeline.day(3, port(8443), port(9000))

    by_port = {e.port: e for e in timeline.events()}
    assert (by_port[8443].rule, by_port[8443].suppressed, by_port[8443].immediate) == (
        deny,
        False,
        True,
    )
    assert (by_port[9000].rule, by_port[9000].suppressed, by_port[9000].immediate) == (
        allow,
        True,
        False,
    )
    allow.refresh_from_db()
    deny.refresh_from_db()
    assert (deny.hit_count, allow.hit_count) == (1, 1 + 10)  # + the 10 background ports, day 0
    assert deny.last_hit_at == at(3)


def test_it_alerts_a_blacklisted_port_that_would_have_been_quiet(timeline):
    timeline.days(range(0, 4), port(23, proto="udp"), port(8080))
    Rule.objects.create(action="deny", port_lo=8080, reason="no proxies", owner="sec")
    timeline.day(4)
    timeline.day(5, port(8080))  # back within 3 days: quiet, but the rule says alert

    assert timeline.kinds_on(5) == [("blacklisted", 8080)]
    assert timeline.events(kind="blacklisted")[0].immediate


def test_it_ignores_an_expired_rule(timeline):
    Rule.objects.create(
        action="allow",
        port_lo=9000,
        port_hi=9999,
        reason="temp",
        owner="ops",
        expires_at=at(5),
    )
    timeline.days(range(0, 3))
    timeline.day(3, port(9001))
    timeline.day(6, port(9002))

    by_port = {e.port: e for e in timeline.events()}
    assert by_port[9001].suppressed
    assert not by_port[9002].suppressed
    assert by_port[9002].rule is None


def test_it_ignores_a_disabled_rule(timeline):
    Rule.objects.create(action="allow", port_lo=9001, reason="x", owner="o", enabled=False)
    timeline.days(range(0, 3))
    timeline.day(3, port(9001))

    assert not timeline.events()[0].suppressed


def test_it_diffs_each_run_once(timeline):
    timeline.days(range(0, 3))
    run = timeline.day(3, port(8443), port(3306))
    before = AlertEvent.objects.count()

    assert run_diff(run_id=run.pk) is None
    from alerts.tasks import diff_run

    assert diff_run.run(run.pk) is None
    assert AlertEvent.objects.count() == before
    run.refresh_from_db()
    assert run.diffed_at is not None


def test_it_does_not_count_ports_outside_the_runs_coverage(timeline):
    timeline.days(range(0, 3), port(8080), port(22))
    # Three runs that scanned only ports 1-1000: 8080 was not looked at.
    timeline.days(range(3, 6), port(22), ports="1-1000")
    # Imports without targets cover only the hosts they report: HOST is not missed.
    timeline.days(range(6, 9), targets="")

    p = Port.objects.get(host__ip=HOST, port=8080)
    assert (p.state, p.missed_runs) == ("open", 0)
    assert timeline.events(kind="closed") == []


def test_it_ignores_a_back_filled_older_run(timeline):
    timeline.days(range(3, 6))
    late = timeline.day(1, port(8443))

    assert AlertEvent.objects.filter(run=late).count() == 0
    late.refresh_from_db()
    assert late.diffed_at is not None


@pytest.mark.parametrize("days", [14])
def test_it_tells_a_consistent_story_over_two_weeks(timeline, days):
    """Daily runs with random-looking misses of steady ports create nothing after day 0."""
    steady = [port(p) for p in (8080, 8081, 8082, 8083)]
    for n in range(days):
        # Each steady port is missed on one day in four, never two days running.
        timeline.day(n, *[f for i, f in enumerate(steady) if (n + i) % 4 != 0 or n == 0])

    assert [e for e in timeline.events() if e.run != timeline.runs[0]] == []


def test_it_counts_misses_on_hosts_targeted_by_name(timeline):
    from scanner.models import Host, ScanPolicy

    timeline.days(range(0, 3), port(8080))
    Host.objects.filter(ip=HOST).update(hostname="web.lab.example")
    # Its own policy: an empty result is not judged against the 11-port imports above.
    policy = ScanPolicy.objects.create(name="by name", targets="web.lab.example")
    timeline.days(range(3, 6), background=False, targets="web.lab.example", policy_id=policy.pk)

    assert [e.port for e in timeline.events(kind="closed")] == [8080]


def test_a_run_whose_diff_was_lost_is_diffed_by_the_sweep(timeline):
    from alerts.services.diff import diffs_pending_run

    timeline.days(range(0, 5))
    # Day 5's diff never ran: its worker died inside it (the claim rolled back with it).
    lost = timeline.day(5, port(8443), ports="1-65535", send=False)
    assert timeline.kinds_on(5) == []

    assert diffs_pending_run() == [lost.pk]

    assert timeline.kinds_on(5) == [("new_port", 8443)]
    assert diffs_pending_run() == []  # diffed once; the next sweep leaves it alone
    timeline.day(6, port(8443), ports="1-65535", send=False)
    # A run that finished moments ago may still be inside its own diff: not touched yet.
    assert diffs_pending_run(older_than=timedelta(days=10000)) == []


def test_a_run_with_a_failed_shard_closes_nothing(timeline, monkeypatch):
    from scanner.engines import connect
    from scanner.models import RunState, ScanShard, ShardState
    from scanner.services.results import observations_record
    from scanner.services.shards import shard_fail
    from tests.alerts.conftest import BACKGROUND, NET

    monkeypatch.setattr(connect, "verify", lambda *a, **kw: pytest.fail("nothing is probed"))
    timeline.days(range(0, 6), port(8080))
    timeline.days(range(6, 8))  # two healthy misses: a third closes 8080
    run = ScanRun.objects.create(targets=NET, state=RunState.SWEEPING, fingerprint=False)
    ScanShard.objects.create(run=run, index=0, targets=NET, ports="1-32767", state=ShardState.DONE)
    lost = ScanShard.objects.create(
        run=run, index=1, targets=NET, ports="32768-65535", state=ShardState.RUNNING
    )
    # The first half found the usual background, so the counts look healthy; the half
    # that would have held 8080 failed.
    observations_record(run_id=run.pk, findings=BACKGROUND, seen_at=run.created_at)

    shard_fail(shard_id=lost.pk, error="masscan failed: no route to host")

    run.refresh_from_db()
    assert (run.state, run.degraded) == (RunState.FINISHED, True)
    assert "shard 1 failed: masscan failed" in run.error
    assert run.diffed_at is not None
    assert AlertEvent.objects.filter(run=run).count() == 0
    port_8080 = Port.objects.get(host__ip=HOST, port=8080)
    assert (port_8080.state, port_8080.missed_runs) == ("open", 2)
