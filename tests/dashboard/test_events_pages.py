"""Events list, filters, bulk triage, event page, allow rule from an event, CSV, budgets."""

import csv
import io
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from alerts.kinds import severity_for
from alerts.models import AlertEvent, EventNote, Rule
from alerts.severity import Severity
from audit.models import AuditEntry
from tests.dashboard.conftest import event


def ids_on(response) -> set[int]:
    return {r.event.pk for r in response.context["page"].object_list}


def test_it_derives_severity_from_the_kind():
    assert severity_for("high_risk") == severity_for("blacklisted") == Severity.HIGH
    assert severity_for("new_port") == severity_for("service_changed") == Severity.MEDIUM
    assert severity_for("process_changed") == Severity.MEDIUM
    assert severity_for("closed") == Severity.LOW
    assert severity_for("poc_finding", {"severity": "critical"}) == Severity.CRITICAL
    assert severity_for("poc_finding", {"severity": "info"}) == Severity.LOW
    assert severity_for("poc_finding", {}) == Severity.MEDIUM


def test_it_filters_events_the_way_the_form_says(login, users, world):
    c = login(users["viewer"])
    w = world
    assert ids_on(c.get("/events/?severity=high")) == {w["mysql"].pk}
    assert ids_on(c.get("/events/?severity=medium")) == {w["mysql"].pk, w["ssh"].pk, w["web"].pk}
    assert ids_on(c.get("/events/?kind=closed")) == {w["gone"].pk}
    assert ids_on(c.get("/events/?port=22")) == {w["ssh"].pk}
    assert ids_on(c.get("/events/?host=198.18.1.0/24")) == {w["web"].pk, w["gone"].pk}
    assert ids_on(c.get(f"/events/?network={w['net'].pk}")) == {w["ssh"].pk, w["mysql"].pk}
    assert ids_on(c.get("/events/?suppressed=yes")) == {w["web"].pk}
    assert ids_on(c.get(f"/events/?rule={w['rule'].pk}")) == {w["web"].pk}
    today = timezone.now().date()
    assert ids_on(c.get(f"/events/?since={today}")) == {w["mysql"].pk, w["web"].pk}
    yesterday = today - timedelta(days=1)
    assert ids_on(c.get(f"/events/?until={yesterday}")) == {w["ssh"].pk, w["gone"].pk}
    AlertEvent.objects.filter(pk=w["ssh"].pk).update(state="fixed", open_key=None)
    assert w["ssh"].pk not in ids_on(c.get("/events/?state=open"))


@pytest.mark.parametrize(
    "query",
    [
        "port=http",
        "port=70000",
        "since=yesterday",
        "host=300.1.1.1",
        "state=<b>",
        "severity=urgent",
        "network=-1",
        "page=x",
        "suppressed=maybe",
        "kind=%00",
    ],
)
def test_it_explains_bad_filters_instead_of_failing(login, users, world, query):
    response = login(users["viewer"]).get(f"/events/?{query}")
    assert response.status_code == 200
    if not query.startswith("page"):
        assert response.context["filters"].errors


def test_it_acknowledges_selected_events_with_a_note(login, users, world):
    ids = [world["ssh"].pk, world["mysql"].pk]
    c = login(users["triager"])
    response = c.post(
        "/events/bulk/",
        {"ids": ids, "action": "acknowledge", "reason": "owner asked", "query": "severity=medium"},
    )
    assert response.status_code == 302 and response["Location"] == "/events/?severity=medium"
    assert set(AlertEvent.objects.filter(pk__in=ids).values_list("state", flat=True)) == {
        "acknowledged"
    }
    assert (
        EventNote.objects.filter(
            event_id__in=ids, text="owner asked", author=users["triager"]
        ).count()
        == 2
    )
    entries = AuditEntry.objects.filter(action="event.transition", actor=users["triager"])
    assert sorted(int(e.object_id) for e in entries) == sorted(ids)
    assert entries[0].before == {"state": "new"} and entries[0].after == {"state": "acknowledged"}


def test_it_says_why_a_transition_is_refused(login, users, world):
    AlertEvent.objects.filter(pk=world["gone"].pk).update(state="fixed", open_key=None)
    c = login(users["triager"])
    c.post(
        "/events/bulk/",
        {"ids": [world["gone"].pk, world["ssh"].pk], "action": "ignore", "reason": "lab"},
    )
    page = c.get("/events/")
    text = page.content.decode()
    assert "cannot go from fixed to ignored" in text
    assert AlertEvent.objects.get(pk=world["ssh"].pk).state == "ignored"


def test_it_shows_an_event_with_its_trail_notes_run_and_rule(login, users, world):
    web = world["web"]
    c = login(users["triager"])
    c.post(f"/events/{web.pk}/note/", {"text": "kept for the lab"})
    c.post(f"/events/{web.pk}/transition/", {"to_state": "ignored", "note": "expected"})
    page = c.get(f"/events/{web.pk}/").content.decode()
    assert "kept for the lab" in page and "expected" in page
    assert "raised" in page and "ignored" in page and "triager" in page
    assert f"run {world['run'].pk}" in page
    assert f"#{world['rule'].pk} allow: lab web" in page
    assert login(users["viewer"]).get("/events/999999/").status_code == 404


def test_it_prefills_an_allow_rule_from_an_event_and_suppresses_the_next_one(login, users, world):
    from alerts.services.events import Candidate, events_raise

    mysql = world["mysql"]
    c = login(users["admin"])
    form = c.get(f"/rules/new/?from_event={mysql.pk}").context["form"]
    assert form.initial["ip_cidr"] == "198.18.0.10" and form.initial["port_lo"] == 3306
    assert form.initial["action"] == "allow" and form.initial["zone"] == "internal"
    fields = {k: v for k, v in form.initial.items() if v is not None}
    fields.update(owner="dba team", proto="tcp")
    preview = c.post(f"/rules/new/?from_event={mysql.pk}", {**fields, "preview": "1"})
    assert [r.event.pk for r in preview.context["preview"]["rows"]] == [mysql.pk]
    assert not Rule.objects.filter(owner="dba team").exists()  # a dry run saves nothing
    assert c.post("/rules/new/", {**fields, "save": "1"}).status_code == 302
    rule = Rule.objects.get(owner="dba team")
    assert (
        AuditEntry.objects.get(action="rule.create", object_id=str(rule.pk)).actor == users["admin"]
    )
    c.post(f"/events/{mysql.pk}/transition/", {"to_state": "fixed"})
    result = events_raise(
        candidates=[
            Candidate(
                world["a"].pk, "198.18.0.10", "internal", "tcp", 3306, "high_risk", immediate=True
            )
        ],
        at=timezone.now(),
    )
    again = AlertEvent.objects.get(pk=result.event_ids[0])
    assert again.suppressed and again.rule_id == rule.pk
    assert again.severity == Severity.HIGH


def test_it_refuses_a_bad_rule_with_a_message(login, users, world):
    c = login(users["admin"])
    response = c.post(
        "/rules/new/",
        {"action": "allow", "ip_cidr": "10.0.0.0/33", "proto": "any", "reason": "x", "owner": "y"},
    )
    assert response.status_code == 200 and response.context["form"].errors
    assert Rule.objects.count() == 1


def test_it_expires_a_rule_and_records_before_and_after(login, users, world):
    rule = world["rule"]
    login(users["admin"]).post(f"/rules/{rule.pk}/expire/")
    rule.refresh_from_db()
    assert rule.expires_at is not None and rule.expires_at <= timezone.now()
    entry = AuditEntry.objects.get(action="rule.update", object_id=str(rule.pk))
    assert entry.before["expires_at"] is None and entry.after["expires_at"]


def test_it_exports_the_filtered_events_as_csv(login, users, world):
    response = login(users["viewer"]).get("/events/export.csv?kind=new_port")
    assert response.streaming
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0][:5] == ["id", "created_at", "ip", "proto", "port"]
    assert sorted((r[2], r[4], r[6]) for r in rows[1:]) == [
        ("198.18.0.10", "22", "medium"),
        ("198.18.1.20", "8080", "medium"),
    ]


@pytest.mark.parametrize(
    "path", ["/events/", "/hosts/", "/runs/", "/rules/", "/", "/policies/", "/networks/"]
)
def test_it_reads_list_pages_in_a_fixed_number_of_queries(login, users, world, path):
    c = login(users["triager"])
    c.get(path)  # warm the session and role caches of this test client

    def count() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert c.get(path).status_code == 200
        return len(ctx.captured_queries)

    before = count()
    for i in range(30):
        event(world["a"], 1000 + i, "new_port", run=world["run"])
        event(world["b"], 2000 + i, "closed", rule=world["rule"])
    assert count() == before <= 15
