"""PoC runs through the services: a real Redis proven open, its finding raised once (with
evidence, severity, at once), fixed by a negative re-check, reopened only by a positive one;
scope checked in the worker; a hanging check cut off with nothing left behind."""

import socket
import subprocess
import time
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

import tests.poc.hanging_check  # noqa: F401  (registers test_hang in this process too)
from alerts.models import AlertEvent, EventKind, EventState
from alerts.notify.models import Message
from alerts.services.diff import run_diff
from poc.engine import check_run
from poc.models import PocCheck, PocReason, PocResult, PocState
from poc.services.queue import PocTarget, pocs_queue
from poc.services.reaper import pocs_recheck_due
from poc.services.runs import poc_claim, poc_run
from scanner.findings import Finding
from scanner.services.results import run_import
from scanner.services.scope import exclusion_add
from tests.alerts.notify.conftest import free_port

pytestmark = pytest.mark.django_db


def run_now(host, port, check="redis_noauth", reason=PocReason.MANUAL, token="t1"):
    [check_id] = pocs_queue(targets=[PocTarget(host.pk, "tcp", port, check)], reason=reason)
    return check_id, poc_run(check_id=check_id, token=token)


def findings():
    return list(AlertEvent.objects.filter(kind=EventKind.POC_FINDING))


@pytest.mark.process
def test_it_raises_one_immediate_finding_fixes_it_and_reopens_it_only_when_positive(
    redis_open, loopback_scope, django_capture_on_commit_callbacks
):
    host = loopback_scope(redis_open.ip)
    with django_capture_on_commit_callbacks(execute=True):
        _, result = run_now(host, redis_open.port)

    assert result.vulnerable and result.severity == "high"
    [event] = findings()
    assert event.immediate and event.state == EventState.NEW and event.port == redis_open.port
    assert event.detail["severity"] == "high" and event.detail["check"] == "redis_noauth"
    assert "redis_version:" in event.detail["evidence"]
    assert Message.objects.filter(kind="immediate").exists()  # the alert is queued

    # Positive again while open: history grows, the finding does not.
    run_now(host, redis_open.port, token="t2")
    assert len(findings()) == 1 and PocResult.objects.count() == 2

    redis_open.restart(password="s3cret")
    run_now(host, redis_open.port, reason=PocReason.RECHECK, token="t3")
    event.refresh_from_db()
    assert event.state == EventState.FIXED
    assert "NOAUTH" in PocResult.objects.first().evidence

    # A scan that sees the port again does not reopen the finding: the port being open
    # says nothing about the password.
    run = run_import(
        findings=[Finding(redis_open.ip, redis_open.port, service="redis")],
        at=timezone.now() + timedelta(minutes=1),
        targets=redis_open.ip,
    )
    run_diff(run_id=run.pk)
    event.refresh_from_db()
    assert event.state == EventState.FIXED

    redis_open.restart()
    run_now(host, redis_open.port, token="t4")
    event.refresh_from_db()
    assert event.state == EventState.REOPENED and len(findings()) == 1


@pytest.mark.process
def test_it_rechecks_open_findings_once_a_day(redis_open, loopback_scope):
    host = loopback_scope(redis_open.ip)
    run_now(host, redis_open.port)
    PocResult.objects.update(checked_at=timezone.now() - timedelta(hours=25))

    queued = pocs_recheck_due()

    assert len(queued) == 1 and PocCheck.objects.get(pk=queued[0]).reason == PocReason.RECHECK
    assert pocs_recheck_due() == []  # already pending


def test_it_never_runs_a_check_against_a_target_removed_from_scope_after_queueing(
    loopback_scope,
):
    listener = socket.socket()
    listener.bind(("127.0.0.7", free_port()))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    host = loopback_scope("127.0.0.7")
    [check_id] = pocs_queue(targets=[PocTarget(host.pk, "tcp", port, "redis_noauth")],
                            reason=PocReason.CHAIN)  # fmt: skip

    exclusion_add(cidr="127.0.0.7/32", reason="removed while queued")
    result = poc_run(check_id=check_id, token="t1")

    run = PocCheck.objects.get(pk=check_id)
    assert result is None and run.state == PocState.SKIPPED and "scope" in run.error
    with pytest.raises(BlockingIOError):
        listener.accept()  # nobody connected
    listener.close()


def test_it_lets_one_task_hold_a_run_and_a_redelivered_copy_take_it_back(loopback_scope):
    host = loopback_scope("127.0.0.9")
    [check_id] = pocs_queue(targets=[PocTarget(host.pk, "tcp", 6379, "redis_noauth")],
                            reason=PocReason.CHAIN)  # fmt: skip
    assert pocs_queue(targets=[PocTarget(host.pk, "tcp", 6379, "redis_noauth")],
                      reason=PocReason.CHAIN) == []  # fmt: skip

    assert poc_claim(check_id=check_id, token="first") is not None
    assert poc_claim(check_id=check_id, token="second") is None  # heartbeat is fresh
    assert poc_claim(check_id=check_id, token="first") is not None  # redelivered copy
    PocCheck.objects.filter(pk=check_id).update(claimed_at=timezone.now() - timedelta(minutes=5))
    assert poc_claim(check_id=check_id, token="second") is not None  # the first one died


@pytest.mark.process
def test_it_cuts_off_a_hanging_check_and_leaves_no_process_or_socket(monkeypatch):
    monkeypatch.setenv("PORTMON_POC_CHECK_MODULES", "tests.poc.hanging_check")
    listener = socket.socket()
    listener.bind(("127.0.0.8", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    started = time.monotonic()

    outcome = check_run(check="test_hang", ip="127.0.0.8", port=port, timeout=1, grace=1)

    assert outcome.verdict is None and "did not finish within 2s" in outcome.error
    assert time.monotonic() - started < 5
    left = subprocess.run(["pgrep", "-f", "poc.runner -- test_hang"], capture_output=True)
    assert left.stdout == b""
    conns = subprocess.run(
        ["ss", "-Htn", "state", "established", "dst", f"127.0.0.8:{port}"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert conns.stdout.strip() == ""
    listener.close()


@pytest.mark.process
def test_it_runs_checks_by_hand_and_prints_json(redis_open, loopback_scope, capsys):
    loopback_scope(redis_open.ip)

    call_command("poc", f"{redis_open.ip}:{redis_open.port}", "--check", "redis_noauth", "--json")

    import json

    [row] = json.loads(capsys.readouterr().out)
    assert row["ip"] == redis_open.ip and row["port"] == redis_open.port
    assert row["check"] == "redis_noauth" and row["vulnerable"] and row["severity"] == "high"
    assert "redis_version" in row["evidence"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["198.18.250.7:6379"], "not inside a network in scope"),
        (["127.0.0.6"], "not IP:PORT"),
        (["127.0.0.6:99999"], "1-65535"),
        (["127.0.0.6:6379", "--check", "nope"], "unknown check"),
    ],
)
def test_it_refuses_bad_manual_input_with_one_line(loopback_scope, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("poc", *args)


def test_two_checks_positive_on_one_port_each_keep_one_open_finding(loopback_scope):
    from poc.checks import Verdict
    from poc.services.findings import poc_record
    from poc.services.runs import poc_claim

    host = loopback_scope("127.0.0.9")
    opened = []
    for check in ("redis_noauth", "http_dirlist", "redis_noauth"):  # the last: a re-check
        [check_id] = pocs_queue(
            targets=[PocTarget(host.pk, "tcp", 8080, check)], reason=PocReason.MANUAL
        )
        run = poc_claim(check_id=check_id, token="t")
        verdict = Verdict(vulnerable=True, severity="high", title=f"{check} open", evidence="x")
        opened.append(poc_record(run=run, token="t", verdict=verdict).event_id)

    assert opened[0] != opened[1] and opened[2] == opened[0]
    by_check = {e.detail["check"]: e.state for e in findings()}
    assert by_check == {"redis_noauth": EventState.NEW, "http_dirlist": EventState.NEW}


@pytest.mark.process
def test_the_host_page_shows_the_latest_verdict_of_each_check(redis_open, loopback_scope, client):
    from django.contrib.auth.models import Group, User

    host = loopback_scope(redis_open.ip)
    run_now(host, redis_open.port)
    redis_open.restart(password="s3cret")
    run_now(host, redis_open.port, reason=PocReason.RECHECK, token="t2")
    pocs_queue(targets=[PocTarget(host.pk, "tcp", 6380, "redis_noauth")], reason=PocReason.MANUAL)
    user = User.objects.create_user("v", password="x")
    user.groups.add(Group.objects.get_or_create(name="viewer")[0])
    client.force_login(user)

    slot = client.get(f"/hosts/{host.ip}/").context["slots"][1]
    assert slot["key"] == "poc" and slot["available"]
    rows = [(r["port"], r["check"], r["verdict"]) for r in slot["rows"]]
    # One row per (port, check): the queued one, then the latest verdict (fixed now).
    assert rows == [
        ("6380/tcp", "redis_noauth", "pending"),
        (f"{redis_open.port}/tcp", "redis_noauth", "not vulnerable"),
    ]
    assert "NOAUTH" in slot["rows"][1]["evidence"]


@pytest.mark.process
def test_a_triager_rechecks_a_finding_from_its_page_and_the_verdict_fixes_it(
    redis_open, loopback_scope, client, django_capture_on_commit_callbacks, monkeypatch
):
    from django.contrib.auth.models import Group, User

    from poc.services import queue
    from tests.dashboard.conftest import event as event_of

    host = loopback_scope(redis_open.ip)
    run_now(host, redis_open.port)
    [event] = findings()
    viewer = User.objects.create_user("v", password="x")
    viewer.groups.add(Group.objects.get_or_create(name="viewer")[0])
    triager = User.objects.create_user("t", password="x")
    triager.groups.add(Group.objects.get_or_create(name="triager")[0])
    client.force_login(viewer)
    page = client.get(f"/events/{event.pk}/").content.decode()
    assert "redis_noauth" in page and "redis_version:" in page and 'id="recheck"' not in page
    assert client.post(f"/events/{event.pk}/recheck/").status_code == 403

    published = []
    monkeypatch.setattr(queue, "task_by_name", lambda name: FakeTask(published))
    client.force_login(triager)
    assert 'id="recheck"' in client.get(f"/events/{event.pk}/").content.decode()
    redis_open.restart(password="s3cret")  # the team fixed it
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/events/{event.pk}/recheck/", follow=True)
    check = PocCheck.objects.latest("id")
    assert (check.state, check.event_id) == (PocState.PENDING, event.pk)
    assert published == [check.pk] and "re-check queued" in response.content.decode()
    # A second press while that run is pending queues nothing more.
    again = client.post(f"/events/{event.pk}/recheck/", follow=True).content.decode()
    assert "queued or running already" in again and PocCheck.objects.count() == 2

    poc_run(check_id=check.pk, token="worker")  # what the poc worker does with the message
    event.refresh_from_db()
    assert event.state == EventState.FIXED
    assert "PoC re-check" in client.get(f"/events/{event.pk}/").content.decode()
    other = event_of(host, 8080, "new_port")
    refused = client.post(f"/events/{other.pk}/recheck/", follow=True).content.decode()
    assert "only a PoC finding can be re-checked" in refused
    assert client.post("/events/999999/recheck/").status_code == 404


class FakeTask:
    """Stands in for the broker hop only (the poc queue's worker is tested in
    tests/poc/test_lab_chain.py): records what would be sent."""

    def __init__(self, sent: list) -> None:
        self.sent = sent

    def apply_async(self, args) -> None:
        self.sent.extend(args)


@pytest.mark.process
def test_the_api_rechecks_a_finding_for_triagers(redis_open, loopback_scope, monkeypatch):
    from django.contrib.auth.models import Group, User
    from rest_framework.test import APIClient

    from accounts.services import api_token_issue
    from poc.services import queue
    from tests.dashboard.conftest import event as event_of

    host = loopback_scope(redis_open.ip)
    run_now(host, redis_open.port)
    [event] = findings()
    monkeypatch.setattr(queue, "task_by_name", lambda name: FakeTask([]))

    def api(role: str) -> APIClient:
        user = User.objects.create_user(role, password="x")
        user.groups.add(Group.objects.get_or_create(name=role)[0])
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {api_token_issue(user=user).token}")
        return client

    url = f"/api/events/{event.pk}/recheck/"
    assert api("viewer").post(url).status_code == 403
    triager = api("triager")
    first = triager.post(url)
    assert first.status_code == 202
    assert PocCheck.objects.get(pk=first.json()["poc_run"]).state == PocState.PENDING
    assert triager.post(url).json()["poc_run"] is None  # pending already
    other = event_of(host, 8080, "new_port")
    refused = triager.post(f"/api/events/{other.pk}/recheck/")
    assert refused.status_code == 400 and "only a PoC finding" in refused.json()["detail"]
