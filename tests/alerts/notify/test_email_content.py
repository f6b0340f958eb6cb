"""What the emails say, through the real SMTP path: heading, totals, severity colours, PoC
evidence, casing, and every open event of an owner in the digest, not only the day's."""

import re
from datetime import timedelta

import pytest

from alerts.notify.content import SEVERITY_COLOURS
from alerts.notify.services.delivery import messages_send_due
from alerts.notify.services.digest import digest_queue
from alerts.notify.services.immediate import immediate_queue
from alerts.severity import Severity
from scanner.models import Host, ScanRun
from tests.alerts.notify.conftest import NOW, SITE, event_make, parts

pytestmark = pytest.mark.django_db

EVIDENCE = (
    "# Server\r\nredis_version:7.2.4\nredis_mode:standalone\n<script>alert(1)</script>\n"
    "All clear: nothing found"
)


def text_html(mail) -> tuple[str, str]:
    text, html = parts(mail)
    return text.replace("\r\n", "\n"), html


def poc_event(host, **fields):
    return event_make(
        host,
        6379,
        "poc_finding",
        immediate=True,
        at=NOW,
        detail={
            "check": "redis-noauth",
            "severity": "high",
            "title": "Redis answers INFO without authentication",
            "reason": "high",
            "evidence": fields.pop("evidence", EVIDENCE),
        },
        **fields,
    )


def test_it_alerts_a_poc_finding_with_its_evidence_and_proper_casing(smtp, world):
    event = poc_event(world["host_a"])
    immediate_queue(event_ids=[event.pk], now=NOW)
    messages_send_due(now=NOW)

    [mail] = smtp.to("alice@example.com")
    assert mail["Subject"] == (
        "[Portmon] PoC finding: 198.18.1.5:6379/tcp - Redis answers INFO without authentication"
    )
    text, html = text_html(mail)
    for part in (mail["Subject"], text, html):
        assert "Poc finding" not in part and "(high))" not in part
    assert text.startswith("PoC finding (high): 198.18.1.5:6379/tcp\n")
    # Each line of evidence is quoted: none can pass for a line of the message.
    assert "\nEvidence:\n  | # Server\n  | redis_version:7.2.4\n" in text
    assert "\n  | All clear: nothing found\n" in text
    assert not re.search(r"^All clear", text, re.MULTILINE)
    assert "<h1" in html and "PoC finding" in html
    assert f"background: {SEVERITY_COLOURS[Severity.HIGH]}" in html
    pre = html.split("<pre", 1)[1].split("</pre>", 1)[0]
    assert "redis_version:7.2.4" in pre
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pre and "<script>" not in html


def test_it_shows_the_first_lines_of_long_evidence(smtp, world):
    evidence = "\n".join(f"line {n}" for n in range(1, 31))
    event = poc_event(world["host_a"], evidence=evidence)
    immediate_queue(event_ids=[event.pk], now=NOW)
    messages_send_due(now=NOW)
    text, _ = text_html(smtp.to("alice@example.com")[0])
    assert "  | line 20\n  | ... (10 more lines)\n" in text and "line 21" not in text


def test_it_lists_an_owners_open_events_of_earlier_days_by_age(smtp, world):
    """The reported case: 8 open events older than a day, and a digest that said only
    "1 baseline"."""
    host = world["host_b"]
    opened = [
        event_make(host, 9000 + n, "new_port", at=NOW - timedelta(days=n + 2)) for n in range(7)
    ]
    opened.append(event_make(host, 6379, "high_risk", immediate=True, at=NOW - timedelta(hours=30)))
    opened[2].state = "acknowledged"
    opened[2].save()
    # Not open, or not bob's: never listed.
    gone = [
        event_make(host, 7001, "new_port", at=NOW - timedelta(days=3), state="fixed"),
        event_make(host, 7002, "new_port", at=NOW - timedelta(days=3), state="ignored"),
        event_make(host, 7003, "new_port", at=NOW - timedelta(days=3), suppressed=True),
        event_make(world["host_a"], 7004, "new_port", at=NOW - timedelta(days=3)),
    ]
    ScanRun.objects.create(
        targets="198.18.2.0/24",
        diffed_at=NOW - timedelta(hours=1),
        baseline=[{"network": "198.18.2.0/24", "network_id": world["net_b"].pk,
                   "ports": 4, "hosts": 1}],
    )  # fmt: skip

    digest_queue(now=NOW)
    messages_send_due(now=NOW)

    [mail] = smtp.to("bob@example.com")
    assert mail["Subject"] == "[Portmon] Daily digest 2026-11-21: 1 baseline, 8 still open"
    text, html = text_html(mail)
    assert "Open now:       8 (1 high, 7 medium)" in text
    assert "Still open from before (8), oldest first" in text
    listed = [int(pk) for pk in re.findall(rf"{SITE}/events/(\d+)/", text)]
    # Oldest first: the 8-day-old one leads, the 30-hour-old high-risk port closes.
    assert listed == [e.pk for e in sorted(opened, key=lambda e: e.created_at)]
    assert "  open 8 d (new): " in text and "  open 30 h (new): " in text
    assert "  open 4 d (acknowledged): " in text
    assert "- [high] 198.18.2.7:6379/tcp  high-risk port" in text
    for event in gone:
        assert f"/events/{event.pk}/" not in text + html
    assert html.count(f"background: {SEVERITY_COLOURS[Severity.MEDIUM]}") >= 7
    assert f"background: {SEVERITY_COLOURS[Severity.HIGH]}" in html
    assert "Portmon daily digest, 2026-11-21</h1>" in html


def test_it_caps_the_still_open_list_and_counts_the_rest(smtp, world, settings):
    from alerts.notify import selectors

    settings.PORTMON_DIGEST_RECIPIENTS = []
    host = Host.objects.create(ip="198.18.2.9", network=world["net_b"])
    for n in range(12):
        event_make(host, 1000 + n, "new_port", at=NOW - timedelta(days=2, minutes=n))
    section = selectors.still_open(
        before=NOW - timedelta(days=1), network_ids=[world["net_b"].pk], limit=5
    )
    assert (section.total, len(section.items), section.more) == (12, 5, 7)
    # Oldest first: the one raised 11 minutes before the others' day leads.
    assert section.items[0].port == 1011
