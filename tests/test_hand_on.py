"""One base task class hands work on when a task is killed by its hard time limit
(portmon.tasks.HandOnTask): shards, fingerprint batches and PoC runs alike."""

import pytest
from billiard.exceptions import TimeLimitExceeded
from celery.exceptions import SoftTimeLimitExceeded

from poc import tasks as poc_tasks
from portmon.tasks import HandOnTask
from scanner import tasks as scanner_tasks
from scanner.services import fingerprints, shards


@pytest.fixture
def handed(monkeypatch):
    calls = []

    def record(name):
        return lambda **kwargs: calls.append((name, kwargs))

    monkeypatch.setattr(shards, "shard_lost", record("shard_lost"))
    monkeypatch.setattr(fingerprints, "fingerprint_abandon", record("fingerprint_abandon"))
    monkeypatch.setattr(poc_tasks.runs, "poc_abandon", record("poc_abandon"))
    return calls


def fail(task, exc, args=(), kwargs=None, task_id="5e0a-11"):
    task.on_failure(exc, task_id, args, kwargs or {}, None)


def test_it_hands_each_kind_of_work_on_whether_sent_with_args_or_kwargs(handed):
    killed = TimeLimitExceeded(10)
    fail(scanner_tasks.sweep_shard, killed, args=(7,))
    fail(scanner_tasks.sweep_shard, killed, kwargs={"shard_id": 8})
    fail(scanner_tasks.fingerprint_hosts, killed, args=(3, ["127.0.0.2"]))  # claim: default
    fail(scanner_tasks.fingerprint_hosts, killed, args=(3, ["127.0.0.2"], "abc"))
    fail(poc_tasks.run_check, killed, kwargs={"check_id": 4})
    reason = f"killed by its hard time limit ({killed})"
    fp = f"fingerprint task {reason}"
    assert handed == [
        ("shard_lost", {"shard_id": 7, "reason": reason}),
        ("shard_lost", {"shard_id": 8, "reason": reason}),
        ("fingerprint_abandon", {"run_id": 3, "claim": "5e0a11", "reason": fp}),
        ("fingerprint_abandon", {"run_id": 3, "claim": "abc", "reason": fp}),
        ("poc_abandon", {"check_id": 4, "token": "5e0a11", "reason": reason}),
    ]


def test_it_leaves_other_failures_to_retries_and_reapers(handed):
    for exc in (SoftTimeLimitExceeded(), RuntimeError("boom"), ValueError("bad")):
        fail(scanner_tasks.sweep_shard, exc, args=(7,))
        fail(poc_tasks.run_check, exc, args=(4,))
    assert handed == []


def test_every_task_that_holds_a_claim_has_a_hand_on():
    claimed = [scanner_tasks.sweep_shard, scanner_tasks.fingerprint_hosts, poc_tasks.run_check]
    assert all(isinstance(task, HandOnTask) for task in claimed)
    assert all(task.acks_late and task.time_limit for task in claimed)


def test_a_task_class_without_a_hand_on_fails_loudly_not_silently():
    class Forgetful(HandOnTask):
        name = "tests.forgetful"

        def run(self, thing_id: int) -> None:
            pass

    with pytest.raises(NotImplementedError, match="Forgetful must say how"):
        fail(Forgetful(), TimeLimitExceeded(1), args=(1,))
