"""manage.py digest, the Celery tasks and the beat schedule."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from alerts.notify.models import Message, MessageState
from tests.alerts.notify.conftest import SITE, event_make

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = StringIO()
    call_command("digest", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_it_prints_the_dry_run_and_sends_and_records_nothing(smtp, world):
    event = event_make(
        world["host_a"], 3306, "high_risk", immediate=True, at=timezone.now() - timedelta(hours=1)
    )
    output = run("--dry-run")
    assert output.startswith("To: sec-team@example.com\nSubject: [Portmon] Daily digest ")
    assert "High-risk exposures (1)" in output
    assert f"{SITE}/events/{event.pk}/" in output
    assert Message.objects.count() == 0
    assert smtp.received == []


def test_it_prints_the_digest_of_one_owner_with_to(smtp, world):
    at = timezone.now() - timedelta(hours=1)
    mine = event_make(world["host_b"], 8080, "new_port", at=at)
    theirs = event_make(world["host_a"], 8081, "new_port", at=at)
    output = run("--dry-run", "--to", "BOB@example.com")
    assert output.startswith("To: bob@example.com\n")
    assert f"/events/{mine.pk}/" in output and f"/events/{theirs.pk}/" not in output
    assert "No changes in the last 24 hours." in run("--dry-run", "--to", "nobody@example.com")
    assert Message.objects.count() == 0


def test_it_rejects_a_bad_to_address():
    with pytest.raises(CommandError):
        run("--dry-run", "--to", "not an address")


def test_it_builds_and_sends_without_dry_run(smtp, world):
    event_make(world["host_a"], 8081, "new_port", at=timezone.now() - timedelta(hours=1))
    assert "3 messages queued; sent 3" in run()
    assert len(smtp.received) == 3
    # Again on the same day: the digest exists already, nothing is sent twice.
    assert "0 messages queued; sent 0" in run()
    assert len(smtp.received) == 3


def test_it_runs_the_celery_tasks_in_process(smtp, world):
    from alerts.notify import tasks

    event_make(world["host_a"], 6379, "high_risk", immediate=True, at=timezone.now())
    result = tasks.send_due.apply().get()
    assert result["queued"] == 2 and result["sent"] == 2
    result = tasks.digest.apply().get()
    assert result["queued"] == 3 and result["sent"] == 3
    assert set(Message.objects.values_list("state", flat=True)) == {MessageState.SENT}
    assert tasks.send_due.name == "notify.send_due" and tasks.digest.name == "notify.digest"


def test_migrate_schedules_the_digest_and_the_sender_idempotently(settings):
    from django_celery_beat.models import PeriodicTask

    settings.PORTMON_DIGEST_TIME = "07:30"
    settings.TIME_ZONE = "Europe/Berlin"
    call_command("migrate", verbosity=0)
    call_command("migrate", verbosity=0)
    digest = PeriodicTask.objects.get(task="notify.digest")
    assert (digest.crontab.hour, digest.crontab.minute) == ("7", "30")
    assert str(digest.crontab.timezone) == "Europe/Berlin"
    sender = PeriodicTask.objects.get(task="notify.send_due")
    assert (sender.interval.every, sender.interval.period) == (1, "minutes")

    settings.PORTMON_DIGEST_TIME = "8:05"
    call_command("migrate", verbosity=0)
    digest.refresh_from_db()
    assert (digest.crontab.hour, digest.crontab.minute) == ("8", "5")
    assert PeriodicTask.objects.filter(task__startswith="notify.").count() == 2
    lost_diffs = PeriodicTask.objects.get(task="alerts.diff_pending")
    assert (lost_diffs.interval.every, lost_diffs.interval.period) == (10, "minutes")


def test_it_lists_the_outbox_in_admin_and_retries_on_request(admin_client, smtp, settings):
    from pathlib import Path

    from alerts.notify.services.digest import digest_queue

    Path(settings.STATIC_ROOT).mkdir(parents=True, exist_ok=True)  # whitenoise warns otherwise

    [message] = digest_queue(now=timezone.now())
    Message.objects.filter(pk=message.pk).update(state=MessageState.FAILED, last_error="boom")
    page = admin_client.get("/admin/notify/message/")
    assert page.status_code == 200 and b"sec-team@example.com" in page.content
    admin_client.post(
        "/admin/notify/message/",
        {"action": "retry_now", "_selected_action": [message.pk]},
    )
    message.refresh_from_db()
    assert message.state == MessageState.PENDING


def test_it_registers_the_tasks_beat_refers_to_with_the_worker():
    from portmon.celery import app

    app.loader.import_default_modules()
    assert {"notify.send_due", "notify.digest"} <= set(app.tasks)
    assert app.tasks["notify.send_due"].time_limit == 300
