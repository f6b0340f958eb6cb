"""The daily digest, delivered through a real SMTP server on loopback."""

from datetime import timedelta

import pytest

from alerts.models import Rule
from alerts.notify.models import Message, MessageState
from alerts.notify.selectors import events_with_notified
from alerts.notify.services.delivery import messages_send_due
from alerts.notify.services.digest import digest_queue
from scanner.models import ScanRun
from tests.alerts.notify.conftest import NOW, SITE, event_make, parts

pytestmark = pytest.mark.django_db


def test_it_sends_the_digest_with_sections_and_dashboard_links(smtp, world):
    a, b = world["host_a"], world["host_b"]
    risky = event_make(
        a, 3306, "high_risk", immediate=True, detail={"reason": "new", "zone": "internal"}
    )
    new = event_make(b, 8080, "new_port", detail={"reason": "never seen"})
    changed = event_make(
        a,
        80,
        "service_changed",
        detail={"old": {"label": "http nginx"}, "new": {"label": "mysql MySQL 8.0"}},
    )
    closed = event_make(b, 22, "closed")
    allow = Rule.objects.create(action="allow", reason="backup <agent>", owner="ops")
    allowed = event_make(a, 9999, "new_port", suppressed=True, rule=allow)
    old = event_make(a, 4444, "new_port", at=NOW - timedelta(hours=30))  # yesterday's news
    degraded = ScanRun.objects.create(
        targets="198.18.1.0/24", degraded=True, created_at=NOW - timedelta(hours=3)
    )

    digest_queue(now=NOW)
    report = messages_send_due(now=NOW)

    assert report.sent == 3  # sec-team (global), alice and bob (owners)
    [mail] = smtp.to("sec-team@example.com")
    assert mail["Subject"] == (
        "[Portmon] Daily digest 2026-11-21: 1 high-risk, 1 new, 1 changed, 1 closed, "
        "1 rule hit, 1 degraded run, 1 still open"
    )
    assert mail["From"] == "portmon@portmon.test"
    text, html = parts(mail)
    for title in ("High-risk exposures (1)", "New ports (1)", "Service changes (1)"):
        assert title in text
    assert "Closed ports (1)" in text and "Rule hits (1)" in text and "Degraded runs (1)" in text
    assert f"- run {degraded.pk} at 2026-11-21 05:00 UTC: hosts found: 0" in text
    assert "198.18.1.5:3306/tcp  high-risk port: new" in text
    assert "198.18.1.5:80/tcp  service changed: http nginx -> mysql MySQL 8.0" in text
    # Autoescaped in HTML only: the text part shows what the rule's author typed.
    assert "allowed by rule: backup <agent> (ops)" in text
    assert "allowed by rule: backup &lt;agent&gt; (ops)" in html
    for event in (risky, new, changed, closed, allowed):
        assert f"{SITE}/events/{event.pk}/" in text
        assert f'<a href="{SITE}/events/{event.pk}/">' in html
    # Yesterday's event is not news, but still open: listed after the period's sections.
    period, still_open = text.split("Still open from before (1), oldest first")
    assert f"/events/{old.pk}/" not in period
    assert f"198.18.1.5:4444/tcp  new port  [198.18.1.0/24]\n  open 30 h (new): {SITE}" in (
        still_open.replace("\r\n", "\n")
    )
    assert "Open now:       5 (1 high, 3 medium, 1 low)" in text
    # The suppressed event is only a rule hit, not a new port.
    new_section = text.split("New ports (1)")[1].split("Service changes")[0]
    assert ":9999/" not in new_section
    assert "<h2" in html and "http nginx -&gt; mysql MySQL 8.0" in html
    assert "PoC findings" not in text


def test_it_shows_poc_findings_only_when_there_are_some(smtp, world):
    event_make(world["host_a"], 443, "poc_finding", detail={"title": "CVE-2099-0001 confirmed"})
    digest_queue(now=NOW)
    messages_send_due(now=NOW)
    text, html = parts(smtp.to("sec-team@example.com")[0])
    assert "PoC findings (1)" in text and "CVE-2099-0001 confirmed" in html


def test_it_says_no_changes_in_one_line_on_an_empty_day(smtp, world):
    digest_queue(now=NOW)
    messages_send_due(now=NOW)
    [mail] = smtp.to("sec-team@example.com")
    assert mail["Subject"] == "[Portmon] Daily digest 2026-11-21: no changes"
    text, html = parts(mail)
    assert [line.strip() for line in text.splitlines() if line.strip()] == [
        "Portmon daily digest, 2026-11-21",
        "================================",
        "2026-11-20 08:00 UTC to 2026-11-21 08:00 UTC",
        "Open now:       none",
        "No changes in the last 24 hours.",
        "--",
        f"Portmon: {SITE}/",
    ]
    assert "<h1" in html and "<p>No changes in the last 24 hours.</p>" in html


def test_it_gives_each_owner_only_their_networks_events(smtp, world):
    ev_a = event_make(world["host_a"], 8081, "new_port")
    ev_b = event_make(world["host_b"], 8082, "new_port")
    ev_x = event_make(world["host_x"], 8083, "new_port")  # in no network: global only

    digest_queue(now=NOW)
    messages_send_due(now=NOW)

    def links(address):
        text, _ = parts(smtp.to(address)[0])
        return {pk for pk in (ev_a.pk, ev_b.pk, ev_x.pk) if f"/events/{pk}/" in text}

    assert links("alice@example.com") == {ev_a.pk}
    assert links("bob@example.com") == {ev_b.pk}
    assert links("sec-team@example.com") == {ev_a.pk, ev_b.pk, ev_x.pk}


def test_it_sends_a_global_recipient_who_also_owns_a_network_one_full_digest(smtp, world, settings):
    settings.PORTMON_DIGEST_RECIPIENTS = ["alice@example.com"]
    event_make(world["host_b"], 8082, "new_port")
    digest_queue(now=NOW)
    messages_send_due(now=NOW)
    [mail] = smtp.to("alice@example.com")
    assert "198.18.2.7:8082/tcp" in parts(mail)[0]


def test_it_builds_a_day_digest_once_and_starts_the_next_where_it_ended(smtp, world):
    first = event_make(world["host_a"], 8081, "new_port", at=NOW - timedelta(hours=1))
    assert len(digest_queue(now=NOW)) == 3
    assert digest_queue(now=NOW + timedelta(hours=2)) == []  # same day: nothing new
    messages_send_due(now=NOW)
    assert len(smtp.received) == 3

    second = event_make(world["host_a"], 8082, "new_port", at=NOW + timedelta(hours=5))
    tomorrow = NOW + timedelta(days=1)
    digest_queue(now=tomorrow)
    messages_send_due(now=tomorrow)
    text, _ = parts(smtp.to("sec-team@example.com")[1])
    period, still_open = text.split("Still open from before (1)")
    assert f"/events/{second.pk}/" in period and f"/events/{first.pk}/" not in period
    assert f"/events/{first.pk}/" in still_open  # not news, but nobody acted on it
    msg = Message.objects.get(dedupe_key="digest:2026-11-22:email:sec-team@example.com")
    assert msg.period_start == NOW and msg.period_end == tomorrow


def test_it_marks_events_notified_only_once_the_digest_was_accepted(smtp, world):
    from alerts.models import AlertEvent

    event = event_make(world["host_a"], 8081, "new_port")
    smtp.stop()
    digest_queue(now=NOW)
    messages_send_due(now=NOW)
    assert not events_with_notified(AlertEvent.objects.filter(pk=event.pk)).get().notified
    smtp.start()
    messages_send_due(now=NOW + timedelta(minutes=5))
    assert events_with_notified(AlertEvent.objects.filter(pk=event.pk)).get().notified
    assert Message.objects.filter(state=MessageState.SENT).count() == 3


def test_it_builds_digests_with_queries_independent_of_the_number_of_events(world):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    allow = Rule.objects.create(action="allow", reason="lab", owner="ops")

    def queries_for(n_events: int, day: int) -> int:
        for i in range(n_events):
            host = world["host_a"] if i % 2 else world["host_b"]
            at = NOW + timedelta(days=day, hours=-1, seconds=i)
            event_make(host, 8000 + i, "new_port", at=at, rule=allow, suppressed=i % 3 == 0)
        with CaptureQueriesContext(connection) as ctx:
            assert len(digest_queue(now=NOW + timedelta(days=day))) == 3
        return len(ctx.captured_queries)

    assert queries_for(2, day=0) == queries_for(60, day=1)
