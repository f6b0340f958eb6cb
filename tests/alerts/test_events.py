"""Event triage, the one-open-event guarantee, rule dry runs, the events command, admin."""

import json
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import IntegrityError, transaction
from django.utils import timezone

from alerts.models import AlertEvent, EventAudit, EventNote, HighRiskPort, Rule, open_key_for
from alerts.rules import RuleSpec
from alerts.selectors import rule_dry_run
from alerts.services.events import TransitionError, event_transition, events_transition
from scanner.models import Host
from tests.alerts.conftest import DAY0


@pytest.fixture
def host(db):
    return Host.objects.create(ip="198.18.0.9")


def make_event(host, port=8080, kind="new_port", days=0, **kw):
    return AlertEvent.objects.create(
        host=host,
        proto="tcp",
        port=port,
        kind=kind,
        created_at=DAY0 + timedelta(days=days),
        open_key=open_key_for(host.pk, "tcp", port, kind),
        **kw,
    )


def test_it_seeds_the_high_risk_list(db):
    ports = set(HighRiskPort.objects.filter(proto="tcp").values_list("port", flat=True))
    assert {21, 23, 445, 1433, 1521, 2375, 3306, 3389, 5432, 5900, 6379, 9200, 11211} <= ports
    assert 27017 in ports


def test_it_refuses_a_second_open_event_for_the_same_port_and_kind(host):
    make_event(host)
    with pytest.raises(IntegrityError), transaction.atomic():
        make_event(host)
    make_event(host, kind="service_changed")  # another kind is fine


def test_it_records_who_changed_what(host):
    user = get_user_model().objects.create_user("alice")
    event = make_event(host)
    event_transition(event_id=event.pk, to_state="acknowledged", actor=user, note="looking")
    event_transition(event_id=event.pk, to_state="fixed", actor=user)

    event.refresh_from_db()
    assert (event.state, event.open_key, event.resolved_at is not None) == ("fixed", None, True)
    audit = list(
        EventAudit.objects.filter(event=event).values_list("actor", "from_state", "to_state")
    )
    assert audit == [(user.pk, "new", "acknowledged"), (user.pk, "acknowledged", "fixed")]
    assert EventNote.objects.get(event=event).text == "looking"


def test_it_refuses_transitions_that_make_no_sense(host):
    event = make_event(host)
    with pytest.raises(TransitionError):
        event_transition(event_id=event.pk, to_state="reopened")
    with pytest.raises(TransitionError):
        event_transition(event_id=event.pk, to_state="bogus")
    assert EventAudit.objects.count() == 0


def test_it_refuses_to_reopen_when_another_event_is_open(host):
    first = make_event(host)
    event_transition(event_id=first.pk, to_state="ignored")
    make_event(host)  # the port alerted again meanwhile
    with pytest.raises(TransitionError, match="already open"):
        event_transition(event_id=first.pk, to_state="reopened")
    first.refresh_from_db()
    assert first.state == "ignored"


def test_it_triages_in_bulk_and_reports_refusals(host):
    a, b = make_event(host, port=1), make_event(host, port=2)
    event_transition(event_id=b.pk, to_state="fixed")
    changed, refused = events_transition(event_ids=[a.pk, b.pk, 999999], to_state="ignored")
    assert changed == [a.pk]
    assert set(refused) == {b.pk, 999999}


def test_it_dry_runs_a_draft_rule_over_the_last_7_days(host):
    other = Host.objects.create(ip="198.18.1.9")
    recent = make_event(host, port=8080, days=10)
    make_event(host, port=8080, kind="closed", days=1)  # too old
    make_event(host, port=22, days=10)  # other port
    make_event(other, port=8080, days=10)  # other network

    draft = RuleSpec(id=None, action="allow", ip_cidr="198.18.0.0/24", port_lo=8000, port_hi=8999)
    matched = rule_dry_run(spec=draft, now=DAY0 + timedelta(days=11))
    assert matched == [recent]
    assert Rule.objects.count() == 0  # a dry run saves nothing


def test_it_lists_events_as_a_table_and_as_json(host, capsys):
    make_event(host, port=3306, kind="high_risk", immediate=True)
    acked = make_event(host, port=8080)
    event_transition(event_id=acked.pk, to_state="acknowledged")

    call_command("events", "--state", "new")
    table = capsys.readouterr().out
    assert "198.18.0.9:3306/tcp" in table and "high_risk" in table and "now" in table
    assert "8080" not in table

    call_command("events", "--json")
    rows = json.loads(capsys.readouterr().out)
    assert [(r["port"], r["state"]) for r in rows] == [(8080, "acknowledged"), (3306, "new")]
    assert rows[1]["url"] == f"/events/{rows[1]['id']}/"


def test_it_says_when_there_are_no_events(db, capsys):
    call_command("events", "--kind", "closed")
    assert capsys.readouterr().out.strip() == "no events"


def test_it_dry_runs_rules_from_the_admin(admin_client, host):
    event = make_event(host, port=8080)
    AlertEvent.objects.filter(pk=event.pk).update(created_at=timezone.now())
    rule = Rule.objects.create(action="allow", port_lo=8080, reason="proxy", owner="ops")
    response = admin_client.post(
        "/admin/alerts/rule/",
        {"action": "dry_run", "_selected_action": [rule.pk]},
        follow=True,
    )
    assert f"Rule #{rule.pk} would have matched 1 event(s)" in response.content.decode()
    for url in (
        "/admin/alerts/alertevent/",
        "/admin/alerts/rule/",
        "/admin/alerts/highriskport/",
        f"/admin/alerts/alertevent/{event.pk}/change/",
        "/admin/alerts/eventaudit/",
    ):
        assert admin_client.get(url).status_code == 200, url


def test_it_triages_from_the_admin_with_an_audit_row(admin_client, host):
    event = make_event(host)
    admin_client.post(
        "/admin/alerts/alertevent/",
        {"action": "mark_acknowledged", "_selected_action": [event.pk]},
        follow=True,
    )
    event.refresh_from_db()
    assert event.state == "acknowledged"
    audit = EventAudit.objects.get(event=event)
    assert audit.actor.username == "admin"


def test_it_validates_rules_in_forms(db):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="reversed"):
        Rule(action="deny", port_lo=90, port_hi=80, reason="r", owner="o").full_clean()
    Rule(action="deny", ip_cidr="198.18.0.0/24", port_lo=80, reason="r", owner="o").full_clean()
