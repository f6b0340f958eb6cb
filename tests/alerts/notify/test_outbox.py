"""Outbox delivery: claims, backoff, SMTP outages, nothing sent twice, nothing dropped."""

from datetime import timedelta

import pytest

from alerts.notify.content import MAX_ATTEMPTS, retry_delay
from alerts.notify.models import Message, MessageState
from alerts.notify.services.delivery import message_claim, messages_send_due
from alerts.notify.services.digest import digest_queue
from tests.alerts.notify.conftest import NOW, event_make, parts

pytestmark = pytest.mark.django_db


def test_it_backs_off_exponentially_up_to_thirty_minutes():
    minutes = [retry_delay(n) / timedelta(minutes=1) for n in range(1, 9)]
    assert minutes == [1, 2, 4, 8, 16, 30, 30, 30]
    assert retry_delay(1000) == timedelta(minutes=30)


def test_it_delivers_exactly_once_after_an_hour_of_smtp_outage(smtp, settings):
    settings.PORTMON_DIGEST_RECIPIENTS = ["sec-team@example.com"]
    smtp.stop()  # the port is closed: connection refused
    [message] = digest_queue(now=NOW)

    attempts_at = []
    for minute in range(61):
        now = NOW + timedelta(minutes=minute)
        report = messages_send_due(now=now)
        assert report.sent == 0
        if report.retrying:
            attempts_at.append(minute)
    message.refresh_from_db()
    assert attempts_at == [0, 1, 3, 7, 15, 31]  # 1, 2, 4, 8, 16 minutes apart
    assert message.state == MessageState.PENDING and message.attempts == 6
    assert "Connection refused" in message.last_error or "ConnectionRefused" in message.last_error
    assert message.next_attempt_at == NOW + timedelta(minutes=31 + 30)
    assert message.sent_at is None

    smtp.start()
    for minute in range(61, 62 + 60):
        messages_send_due(now=NOW + timedelta(minutes=minute))
    assert len(smtp.received) == 1
    message.refresh_from_db()
    assert message.state == MessageState.SENT and message.attempts == 7
    assert message.sent_at == NOW + timedelta(minutes=61)
    assert message.last_error == ""
    mail = smtp.received[0][1]
    assert mail["Subject"].startswith("[Portmon] Daily digest 2026-11-21")
    assert mail["Message-ID"] == f"<portmon.{message.pk}@portmon.test>"


def test_it_keeps_a_message_the_server_refused_and_retries_it(smtp, world):
    event_make(world["host_a"], 8081, "new_port")
    smtp.reply = "451 4.3.0 mailbox busy, try later"
    digest_queue(now=NOW)
    report = messages_send_due(now=NOW)
    assert report.retrying == 3 and report.sent == 0
    assert smtp.received == []
    assert set(Message.objects.values_list("state", flat=True)) == {MessageState.PENDING}
    assert all("451" in e for e in Message.objects.values_list("last_error", flat=True))

    smtp.reply = "250"
    assert messages_send_due(now=NOW + timedelta(minutes=1)).sent == 3
    assert messages_send_due(now=NOW + timedelta(hours=5)).sent == 0
    assert sorted(r[0] for r, _ in smtp.received) == [
        "alice@example.com",
        "bob@example.com",
        "sec-team@example.com",
    ]


def test_it_lets_only_one_sender_claim_a_message(smtp):
    [message] = digest_queue(now=NOW)
    first = message_claim(message_id=message.pk, now=NOW)
    second = message_claim(message_id=message.pk, now=NOW + timedelta(seconds=1))
    assert first is not None and second is None
    # A claimed message is not due for other senders until its lease runs out.
    assert messages_send_due(now=NOW + timedelta(minutes=2)).sent == 0
    assert smtp.received == []
    # The claimer died without an answer: after the lease, it is sent (once).
    assert messages_send_due(now=NOW + timedelta(minutes=11)).sent == 1
    assert messages_send_due(now=NOW + timedelta(minutes=30)).sent == 0
    assert len(smtp.received) == 1


def test_it_gives_up_visibly_after_the_last_attempt(smtp):
    [message] = digest_queue(now=NOW)
    Message.objects.filter(pk=message.pk).update(attempts=MAX_ATTEMPTS - 1)
    smtp.stop()
    report = messages_send_due(now=NOW)
    assert report.failed == 1
    message.refresh_from_db()
    assert message.state == MessageState.FAILED and message.last_error
    smtp.start()
    assert messages_send_due(now=NOW + timedelta(days=1)).sent == 0


def test_it_skips_the_rest_of_the_batch_when_smtp_is_unreachable(smtp, world):
    digest_queue(now=NOW)  # three recipients
    smtp.stop()
    report = messages_send_due(now=NOW)
    # One connection attempt, not one per message: the others wait for the next pass.
    assert (report.retrying, report.skipped) == (1, 2)
    smtp.start()
    assert messages_send_due(now=NOW + timedelta(minutes=1)).sent == 3
    text, html = parts(smtp.received[0][1])
    assert text and html


def test_it_retries_a_given_up_message_on_request_but_never_resends_a_sent_one(smtp):
    from alerts.notify.services.delivery import messages_retry_now

    [message] = digest_queue(now=NOW)
    Message.objects.filter(pk=message.pk).update(state=MessageState.FAILED)
    assert messages_retry_now(message_ids=[message.pk], now=NOW) == 1
    assert messages_send_due(now=NOW).sent == 1
    assert messages_retry_now(message_ids=[message.pk], now=NOW) == 0
    assert messages_send_due(now=NOW + timedelta(minutes=1)).sent == 0
    assert len(smtp.received) == 1
