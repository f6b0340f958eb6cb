"""The public event path: candidates from the diff, host agents or PoC checks -> events."""

from datetime import timedelta

import pytest
from django.db import transaction

from alerts.models import AlertEvent, EventAudit, Rule
from alerts.services.events import Candidate, event_transition, events_raise, events_reopen_seen
from alerts.signals import events_raised
from scanner.models import Host, PortObservation, ScanRun
from tests.alerts.conftest import DAY0

IP = "198.18.0.9"


@pytest.fixture
def host(db):
    return Host.objects.create(ip=IP)


@pytest.fixture
def heard():
    calls = []

    def listener(sender, event_ids, run_id, **kwargs):
        calls.append((event_ids, run_id))

    events_raised.connect(listener)
    yield calls
    events_raised.disconnect(listener)


def candidate(host, port=8080, kind="new_port", **kw) -> Candidate:
    return Candidate(host.pk, host.ip, "internal", "tcp", port, kind, **kw)


def rule(action, **kw) -> Rule:
    return Rule.objects.create(action=action, reason=f"{action} rule", owner="secops", **kw)


def test_it_raises_one_event_per_candidate_with_a_raised_audit_row(host):
    result = events_raise(
        candidates=[candidate(host, 8080, detail={"zone": "internal"}), candidate(host, 3306)],
        at=DAY0,
    )

    events = list(AlertEvent.objects.order_by("port"))
    assert [(e.port, e.state, e.run_id, e.created_at) for e in events] == [
        (3306, "new", None, DAY0),
        (8080, "new", None, DAY0),
    ]
    assert sorted(result.event_ids) == sorted(e.pk for e in events)
    assert result.created == {"new_port": 2}
    audit = EventAudit.objects.filter(event__in=events)
    assert (
        sorted((a.action, a.from_state, a.to_state, a.actor, a.at) for a in audit)
        == [("raised", "", "new", None, DAY0)] * 2
    )


def test_it_lets_a_deny_rule_beat_an_allow_rule_and_counts_the_hit(host):
    allow = rule("allow", ip_cidr="198.18.0.0/24")
    deny = rule("deny", port_lo=8080)

    events_raise(candidates=[candidate(host, 8080)], at=DAY0)

    event = AlertEvent.objects.get()
    assert (event.immediate, event.suppressed, event.rule_id) == (True, False, deny.pk)
    deny.refresh_from_db()
    allow.refresh_from_db()
    assert (deny.hit_count, deny.last_hit_at) == (1, DAY0)
    assert allow.hit_count == 0


def test_it_keeps_an_allowed_event_suppressed_and_credits_the_oldest_allow_rule(host):
    oldest = rule("allow", port_lo=8000, port_hi=9000)
    rule("allow", ip_cidr=IP)

    events_raise(candidates=[candidate(host, 8080), candidate(host, 8081)], at=DAY0)

    assert {(e.suppressed, e.immediate, e.rule_id) for e in AlertEvent.objects.all()} == {
        (True, False, oldest.pk)
    }
    oldest.refresh_from_db()
    assert oldest.hit_count == 2


def test_it_adds_nothing_while_an_event_for_the_same_key_is_open(host):
    counted = rule("allow", port_lo=8080)
    first = events_raise(candidates=[candidate(host, 8080), candidate(host, 8080)], at=DAY0)
    again = events_raise(candidates=[candidate(host, 8080)], at=DAY0 + timedelta(days=1))

    assert len(first.event_ids) == 1 and again.event_ids == ()
    assert AlertEvent.objects.count() == EventAudit.objects.count() == 1
    counted.refresh_from_db()
    assert counted.hit_count == 1

    # Another kind for the same port is another event; a resolved one frees the key.
    events_raise(candidates=[candidate(host, 8080, kind="service_changed")], at=DAY0)
    event_transition(event_id=first.event_ids[0], to_state="ignored", at=DAY0)
    later = events_raise(candidates=[candidate(host, 8080)], at=DAY0 + timedelta(days=2))
    assert len(later.event_ids) == 1
    assert AlertEvent.objects.count() == 3


def test_it_matches_an_agents_process_against_process_rules(host):
    deny = rule("deny", process="nc*")

    events_raise(
        candidates=[
            candidate(host, 4444, kind="new_process", detail={"process": "ncat"}),
            candidate(host, 22, kind="new_process", detail={"process": "sshd"}),
            candidate(host, 5555),  # a scan finding has no process: never matched
        ],
        at=DAY0,
    )

    by_port = {e.port: e for e in AlertEvent.objects.all()}
    assert (by_port[4444].rule_id, by_port[4444].immediate) == (deny.pk, True)
    assert by_port[4444].detail == {"process": "ncat"}
    assert by_port[22].rule_id is None and not by_port[22].immediate
    assert by_port[5555].rule_id is None


def test_it_raises_an_only_if_denied_candidate_only_when_a_deny_rule_matches(host):
    rule("allow", port_lo=8080)
    deny = rule("deny", port_lo=9090)

    result = events_raise(
        candidates=[
            candidate(host, 8080, kind="blacklisted", only_if_denied=True),
            candidate(host, 8081, kind="blacklisted", only_if_denied=True),
            candidate(host, 9090, kind="blacklisted", only_if_denied=True),
        ],
        at=DAY0,
    )

    event = AlertEvent.objects.get()
    assert (event.port, event.kind, event.immediate, event.rule_id) == (
        9090,
        "blacklisted",
        True,
        deny.pk,
    )
    assert result.created == {"blacklisted": 1}


def test_it_announces_events_only_once_they_are_committed(
    host, heard, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as committed:
        result = events_raise(candidates=[candidate(host, 8080)], at=DAY0, run_id=None)
        assert heard == []

    for callback in committed:
        callback()
    assert heard == [(list(result.event_ids), None)]


def test_it_announces_nothing_when_the_transaction_rolls_back(
    host, heard, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(RuntimeError), transaction.atomic():
            events_raise(candidates=[candidate(host, 8080)], at=DAY0)
            raise RuntimeError("the caller failed after raising")
        events_raise(candidates=[], at=DAY0)  # nothing raised, nothing announced

    assert heard == []
    assert not AlertEvent.objects.exists()


def test_it_reopens_a_fixed_event_seen_again_and_announces_it(
    host, heard, django_capture_on_commit_callbacks
):
    (event_id,) = events_raise(candidates=[candidate(host, 8080)], at=DAY0).event_ids
    event_transition(event_id=event_id, to_state="fixed", at=DAY0 + timedelta(hours=1))
    run = ScanRun.objects.create(targets=IP)
    PortObservation.objects.create(run=run, host=host, port=8080)
    PortObservation.objects.create(run=run, host=host, port=9999)

    with django_capture_on_commit_callbacks(execute=True):
        reopened = events_reopen_seen(
            seen=PortObservation.objects.filter(run=run), at=DAY0 + timedelta(days=1), run_id=run.pk
        )

    assert reopened == [event_id]
    assert AlertEvent.objects.get(pk=event_id).state == "reopened"
    assert (
        EventAudit.objects.filter(event_id=event_id).last().comment == f"seen again by run {run.pk}"
    )
    assert heard == [([event_id], run.pk)]
