"""The fixed periodic jobs: declared once in settings, installed by migrate, kept as admins set."""

import os
import subprocess
import sys

import pytest
from django.core.management import call_command
from django_celery_beat.models import PeriodicTask

from tests.conftest import ROOT


@pytest.mark.django_db
def test_migrate_installs_every_declared_job_once(settings):
    call_command("migrate", verbosity=0)
    call_command("migrate", verbosity=0)
    declared = {entry["name"]: entry["task"] for entry in settings.PORTMON_FIXED_SCHEDULES}
    installed = dict(PeriodicTask.objects.filter(name__in=declared).values_list("name", "task"))
    assert installed == declared
    assert {
        "scanner.reap_shards",
        "notify.send_due",
        "alerts.diff_pending",
        "notify.digest",
    } <= set(declared.values())
    reaper = PeriodicTask.objects.get(task="scanner.reap_shards")
    assert (reaper.interval.every, reaper.interval.period) == (1, "minutes")


@pytest.mark.django_db
def test_a_job_an_admin_disabled_stays_disabled_but_follows_its_declared_timing(settings):
    call_command("migrate", verbosity=0)
    digest = PeriodicTask.objects.get(task="notify.digest")
    digest.enabled = False
    digest.save()
    settings.PORTMON_DIGEST_TIME = "06:45"

    call_command("migrate", verbosity=0)

    digest.refresh_from_db()
    assert not digest.enabled
    assert (digest.crontab.hour, digest.crontab.minute) == ("6", "45")


@pytest.mark.process
def test_it_refuses_a_digest_time_that_is_not_hh_mm_at_start_up(tmp_path):
    out = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**os.environ, "PORTMON_DATA_DIR": str(tmp_path), "PORTMON_DIGEST_TIME": "8 am"},
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0
    assert out.stderr.strip() == "portmon: bad setting: PORTMON_DIGEST_TIME='8 am' is not HH:MM"
