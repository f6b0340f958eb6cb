"""Scan policies: schedules mirrored into django-celery-beat, one run at a time."""

import json
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from scanner.models import RunState, ScanPolicy, ScanRun
from scanner.scope import ScopeError
from scanner.services.runs import RunError, policy_run, run_start


@pytest.fixture
def lab_scope(db):
    call_command("scope", "add", "198.18.0.0/24", "--zone", "internal")


@pytest.mark.django_db
def test_it_mirrors_a_policy_schedule_into_beat_and_removes_it():
    policy = ScanPolicy.objects.create(name="dmz", targets="198.18.0.0/24", schedule="30 2 * * *")
    task = PeriodicTask.objects.get(name=f"scan policy {policy.pk}")
    assert task.task == "scanner.policy_run" and task.enabled
    assert json.loads(task.kwargs) == {"policy_id": policy.pk}
    assert (task.crontab.minute, task.crontab.hour) == ("30", "2")

    policy.schedule, policy.enabled = "0 */6 * * 1-5", False
    policy.save()
    task.refresh_from_db()
    assert (task.crontab.hour, task.crontab.day_of_week, task.enabled) == ("*/6", "1-5", False)

    policy.schedule = ""
    policy.save()
    assert not PeriodicTask.objects.filter(name=f"scan policy {policy.pk}").exists()
    policy.schedule = "0 3 * * *"
    policy.save()
    policy.delete()
    assert not PeriodicTask.objects.filter(task="scanner.policy_run").exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "field, value, message",
    [
        ("schedule", "every day", "must have 5 fields"),
        ("schedule", "61 * * * *", "not a valid crontab"),
        ("ports", "1-70000", "outside 1-65535"),
        ("targets", "198.18.0.1,--script,x", "not an IP address"),
    ],
)
def test_it_validates_policies_in_forms(field, value, message):
    policy = ScanPolicy(name="p", targets="198.18.0.0/24")
    setattr(policy, field, value)
    with pytest.raises(ValidationError) as exc:
        policy.full_clean()
    assert message in str(exc.value.message_dict[field])


def test_it_never_starts_two_runs_of_one_policy(lab_scope, django_capture_on_commit_callbacks):
    policy = ScanPolicy.objects.create(name="lab", targets="198.18.0.0/28", ports="22,80")
    with django_capture_on_commit_callbacks(execute=False):
        first = policy_run(policy_id=policy.pk)
        assert first is not None and first.state == RunState.SWEEPING
        assert policy_run(policy_id=policy.pk) is None
        with pytest.raises(RunError, match="already has a run in progress"):
            run_start(targets=policy.targets, ports="22", policy=policy)
    assert ScanRun.objects.filter(policy=policy).count() == 1
    ScanRun.objects.filter(pk=first.pk).update(state=RunState.FINISHED)
    # The same tick sent again (a second beat): still one run, even with the first done.
    assert policy_run(policy_id=policy.pk) is None
    a_minute_ago = timezone.now() - timedelta(minutes=1)
    ScanRun.objects.filter(pk=first.pk).update(created_at=a_minute_ago)
    with django_capture_on_commit_callbacks(execute=False):
        assert policy_run(policy_id=policy.pk) is not None


def test_it_refuses_bad_runs_before_planning(lab_scope):
    with pytest.raises(ScopeError, match="rate must be between"):
        run_start(targets="198.18.0.1", rate=10)
    with pytest.raises(ScopeError, match="engine must be one of"):
        run_start(targets="198.18.0.1", engine="zmap")
    with pytest.raises(ScopeError, match="outside the configured scope"):
        run_start(targets="198.19.0.1")
    assert not ScanRun.objects.exists()
