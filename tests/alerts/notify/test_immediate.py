"""Immediate alerts (high-risk, deny-rule hits) and the signed webhook channel."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from alerts.models import Rule
from alerts.notify.models import Message, MessageKind, MessageState
from alerts.notify.services.delivery import messages_send_due
from alerts.notify.services.digest import digest_queue
from alerts.notify.services.immediate import immediate_queue, immediate_sweep
from tests.alerts.notify.conftest import NOW, SITE, event_make, parts

pytestmark = pytest.mark.django_db


def test_it_alerts_the_owner_and_the_team_at_once_for_a_high_risk_port(smtp, world):
    event = event_make(
        world["host_a"],
        3306,
        "high_risk",
        immediate=True,
        at=NOW,
        detail={"reason": "new", "fingerprint": {"label": "mysql MySQL 8.0.36"}},
    )
    assert immediate_queue(event_ids=[event.pk], now=NOW) == 2
    assert messages_send_due(now=NOW).sent == 2

    for address in ("alice@example.com", "sec-team@example.com"):
        [mail] = smtp.to(address)
        assert mail["Subject"] == (
            "[Portmon] High-risk port: 198.18.1.5:3306/tcp - mysql MySQL 8.0.36 (new)"
        )
        text, html = parts(mail)
        assert f"{SITE}/events/{event.pk}/" in text and "Network:  198.18.1.0/24" in text
        assert f'<a href="{SITE}/events/{event.pk}/">198.18.1.5:3306/tcp</a>' in html
    assert smtp.to("bob@example.com") == []

    # Queued again (a redelivered task, the sweep): nothing new, nothing sent twice.
    assert immediate_queue(event_ids=[event.pk], now=NOW) == 0
    assert immediate_sweep(now=NOW + timedelta(minutes=1)) == 0
    messages_send_due(now=NOW + timedelta(hours=1))
    assert len(smtp.received) == 2


def test_it_alerts_on_a_deny_rule_hit_and_not_on_an_allowed_or_quiet_event(smtp, world):
    deny = Rule.objects.create(action="deny", reason="no telnet anywhere", owner="secops")
    allow = Rule.objects.create(action="allow", reason="lab", owner="ops")
    denied = event_make(world["host_b"], 23, "blacklisted", immediate=True, rule=deny, at=NOW)
    allowed = event_make(
        world["host_b"], 21, "high_risk", immediate=True, suppressed=True, rule=allow, at=NOW
    )
    quiet = event_make(world["host_b"], 8080, "new_port", at=NOW)

    immediate_queue(event_ids=[denied.pk, allowed.pk, quiet.pk], now=NOW)
    messages_send_due(now=NOW)

    [mail] = smtp.to("bob@example.com")
    assert mail["Subject"] == "[Portmon] Blacklisted: 198.18.2.7:23/tcp"
    assert "Rule:     deny rule: no telnet anywhere (secops)" in parts(mail)[0]
    assert len(smtp.received) == 2  # bob and the team, for the denied event only


def test_it_sweeps_up_immediate_events_that_nobody_queued(smtp, world):
    recent = event_make(world["host_a"], 6379, "high_risk", immediate=True, at=NOW)
    stale = event_make(
        world["host_a"], 5432, "high_risk", immediate=True, at=NOW - timedelta(days=2)
    )
    fixed = event_make(world["host_a"], 9200, "high_risk", immediate=True, at=NOW, state="fixed")

    assert immediate_sweep(now=NOW + timedelta(minutes=1)) == 2
    assert immediate_sweep(now=NOW + timedelta(minutes=2)) == 0
    linked = set(
        Message.objects.filter(kind=MessageKind.IMMEDIATE).values_list("events", flat=True)
    )
    assert linked == {recent.pk}
    assert stale.pk not in linked and fixed.pk not in linked


def test_it_posts_signed_json_to_the_webhook(smtp, webhook, world):
    event = event_make(world["host_a"], 3389, "high_risk", immediate=True)
    immediate_queue(event_ids=[event.pk], now=NOW)
    digest_queue(now=NOW)
    report = messages_send_due(now=NOW)
    assert report.sent == 3 + 4  # alert: alice, team, webhook; digest: 3 emails, webhook

    # The URL may carry a token: it stays in the settings, not in every outbox row.
    assert not Message.objects.filter(recipient__contains="127.0.0.1").exists()
    by_type = {r["body"]["type"]: r for r in webhook.requests}
    assert set(by_type) == {"immediate", "digest"}
    assert all(r["signature_ok"] for r in webhook.requests)
    assert all(r["content_type"] == "application/json" for r in webhook.requests)
    alert = by_type["immediate"]["body"]
    assert alert["event"]["id"] == event.pk and alert["event"]["port"] == 3389
    assert alert["event"]["url"] == f"{SITE}/events/{event.pk}/"
    assert alert["text"].startswith("[Portmon] High-risk port: 198.18.1.5:3389/tcp")
    digest = by_type["digest"]["body"]
    assert digest["counts"] == {"high_risk": 1}
    assert [e["id"] for e in digest["events"]] == [event.pk]


@pytest.mark.parametrize("status", [500, 302, 404])
def test_it_retries_a_webhook_that_does_not_answer_2xx(webhook, world, settings, status):
    settings.PORTMON_DIGEST_RECIPIENTS = []
    world["net_a"].__class__.objects.update(owner_email="")
    webhook.status = status
    [message] = digest_queue(now=NOW)
    assert messages_send_due(now=NOW).retrying == 1
    message.refresh_from_db()
    assert message.state == MessageState.PENDING and f"HTTP {status}" in message.last_error

    webhook.status = 204
    assert messages_send_due(now=NOW + timedelta(minutes=1)).sent == 1
    assert len(webhook.requests) == 2
    # Both attempts carried the same signed bytes.
    assert webhook.requests[0]["body"] == webhook.requests[1]["body"]
    assert json.loads(message.payload)["type"] == "digest"


def test_it_signs_with_the_configured_secret(webhook, world, settings):
    settings.PORTMON_DIGEST_RECIPIENTS = []
    world["net_a"].__class__.objects.update(owner_email="")
    settings.PORTMON_WEBHOOK_SECRET = "another secret"
    digest_queue(now=NOW)
    messages_send_due(now=NOW)
    [request] = webhook.requests
    # The test server checks against the shared secret: another secret does not verify.
    assert request["signature_ok"] is False


def test_it_alerts_when_an_imported_run_opens_a_high_risk_port(
    smtp, world, celery_eager, django_capture_on_commit_callbacks
):
    from scanner.findings import Finding
    from scanner.services.results import run_import

    # The whole pipeline: import -> (on commit) alerts.diff_run, eager here -> diff ->
    # events_raised (on commit) -> outbox -> (on commit) notify.send_due -> SMTP: no tick.
    with django_capture_on_commit_callbacks(execute=True):
        run_import(
            findings=[Finding("198.18.1.5", 6379, service="redis")],
            at=timezone.now() - timedelta(minutes=5),
            targets="198.18.1.0/24",
        )
    sent = Message.objects.filter(kind=MessageKind.IMMEDIATE, state=MessageState.SENT)
    assert sent.count() == 2
    assert messages_send_due().sent == 0
    [mail] = smtp.to("alice@example.com")
    assert mail["Subject"].startswith("[Portmon] High-risk port: 198.18.1.5:6379/tcp")
    assert len(smtp.to("sec-team@example.com")) == 1


def test_it_alerts_again_when_a_fixed_high_risk_port_reopens(smtp, world):
    from alerts.models import AlertEvent

    event = event_make(world["host_a"], 5900, "high_risk", immediate=True, at=NOW)
    immediate_sweep(now=NOW)
    messages_send_due(now=NOW)
    assert len(smtp.to("alice@example.com")) == 1

    # Fixed next day, then the diff reopens it two days later (what run_diff does).
    reopened_at = NOW + timedelta(days=2)
    AlertEvent.objects.filter(pk=event.pk).update(state="reopened", updated_at=reopened_at)
    assert immediate_sweep(now=reopened_at + timedelta(minutes=1)) == 2
    assert immediate_sweep(now=reopened_at + timedelta(minutes=2)) == 0
    assert immediate_queue(event_ids=[event.pk], now=reopened_at) == 0
    messages_send_due(now=reopened_at + timedelta(minutes=1))
    assert len(smtp.to("alice@example.com")) == 2
    assert len(smtp.received) == 4
