"""The events list as the work surface (issue 23): what it shows by default, the search
box, bulk actions with their refusals, accepted risks, and allow rules from an event that
resolve what they match. Browser tests: test_triage_browser.py."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from alerts.models import AlertEvent, EventAudit, Rule
from alerts.services.triage import TriageError, acceptances_lapse, events_triage
from audit.models import AuditEntry
from scanner.models import Host, Port
from tests.dashboard.conftest import event


def ids_on(response) -> list[int]:
    return [r.event.pk for r in response.context["page"].object_list]


def row_of(page: str, pk: int) -> str:
    """The list row of one event, as HTML."""
    at = page.index(f'href="/events/{pk}/"')
    return page[page.rindex("<tr", 0, at) : page.index("</tr>", at)]


def test_it_lists_open_events_worst_first_then_longest_waiting(login, users, world):
    w = world
    AlertEvent.objects.filter(pk=w["gone"].pk).update(state="fixed", open_key=None)
    old_medium = event(w["b"], 9000, "new_port", at=timezone.now() - timedelta(days=5))
    ids = ids_on(login(users["viewer"]).get("/events/"))
    # high first; then mediums, the oldest first; the fixed one is not listed.
    assert ids == [w["mysql"].pk, old_medium.pk, w["ssh"].pk, w["web"].pk]
    everything = ids_on(login(users["viewer"]).get("/events/?state=all&sort=newest"))
    assert set(everything) == {w["gone"].pk, *ids}
    assert everything[-1] == old_medium.pk  # newest first on request


def test_it_shows_service_process_network_owner_and_age(login, users, world):
    a = world["a"]
    changed = event(
        a,
        22,
        "service_changed",
        at=timezone.now() - timedelta(days=3),
        detail={
            "zone": "internal",
            "old": {"service": "ssh", "product": "OpenSSH", "version": "8.9"},
            "new": {"service": "ssh", "product": "OpenSSH", "version": "9.2"},
        },
    )
    agent = event(
        a,
        4444,
        "process_changed",
        detail={"zone": "internal", "process": "nc", "previous_process": "sshd"},
    )
    page = login(users["viewer"]).get("/events/").content.decode()
    row = row_of(page, changed.pk)
    assert "ssh OpenSSH 8.9 -&gt; ssh OpenSSH 9.2" in row
    assert "198.18.0.0/24" in row and "a@x.org" in row and "3 d" in row
    assert "sshd -&gt; nc" in row_of(page, agent.pk)
    # No fingerprint in the event: the port's current one (the world's 3306 is "mysql").
    assert "mysql" in row_of(page, world["mysql"].pk)


def test_it_reads_a_page_of_events_in_a_fixed_number_of_queries(login, users, world):
    c = login(users["viewer"])
    c.get("/events/")
    with CaptureQueriesContext(connection) as few:
        c.get("/events/")
    for i in range(40):
        host = Host.objects.create(ip=f"198.18.0.{100 + i}", network=world["net"])
        Port.objects.create(host=host, port=80, service="http", product=f"nginx {i}")
        event(host, 80, "new_port")
    with CaptureQueriesContext(connection) as many:
        c.get("/events/")
    assert len(many) == len(few), [q["sql"] for q in many.captured_queries]


@pytest.mark.parametrize(
    "q, expected",
    [
        ("198.18.1.20", {"web", "gone"}),
        ("198.18.0", {"ssh", "mysql"}),
        ("3306", {"mysql"}),
        ("openssh", {"ssh"}),  # the port's current product
        ("MYSQL", {"mysql"}),
        ("nothing-like-this", set()),
    ],
)
def test_it_searches_address_port_service_product_and_process(login, users, world, q, expected):
    response = login(users["viewer"]).get("/events/", {"q": q})
    assert set(ids_on(response)) == {world[name].pk for name in expected}


def test_it_searches_the_process_a_host_agent_named(login, users, world):
    agent = event(world["a"], 4444, "new_process", detail={"zone": "internal", "process": "nc"})
    response = login(users["viewer"]).get("/events/", {"q": "nc"})
    assert ids_on(response) == [agent.pk]


@pytest.mark.parametrize(
    "q",
    [
        "' OR 1=1 --",
        '"; DROP TABLE alerts_alertevent; --',
        "%",
        "_",
        "\\",
        "<script>alert(1)</script>",
        "ssh' UNION SELECT password FROM auth_user --",
        "\u0000%",  # NUL ends a C string: "%" alone would match everything
        "x" * 500,
    ],
)
def test_it_takes_a_search_with_sql_and_html_metacharacters_as_text(login, users, world, q):
    response = login(users["viewer"]).get("/events/", {"q": q})
    assert response.status_code == 200
    # Nothing holds these characters: a LIKE wildcard is not a wildcard, "OR 1=1" is text.
    assert ids_on(response) == []
    page = response.content.decode()
    assert "<script>alert(1)</script>" not in page
    if q.startswith("<script>"):
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # kept in the box, escaped
    assert AlertEvent.objects.count() == 4


def test_it_keeps_a_bad_filter_in_its_input_and_says_what_is_wrong(login, users, world):
    response = login(users["viewer"]).get("/events/?host=300.1.1.1&port=http&q=ssh")
    page = response.content.decode()
    assert "is not an IP address or CIDR" in page and "is not a number" in page
    assert 'name="host" value="300.1.1.1"' in page
    assert 'name="port" value="http"' in page
    assert 'name="q" value="ssh"' in page


def test_it_keeps_the_filters_in_the_url_of_every_link(login, users, world):
    page = login(users["triager"]).get("/events/?q=198.18&severity=medium").content.decode()
    # A row's kind narrows the same list; the bulk form comes back to it.
    assert "?q=198.18&amp;severity=medium&amp;kind=new_port" in page
    assert 'name="query" value="q=198.18&amp;severity=medium"' in page


def triage(c, ids, action, **extra):
    seen = [f"{pk}:{AlertEvent.objects.get(pk=pk).state}" for pk in ids]
    return c.post(
        "/events/bulk/", {"ids": ids, "action": action, "seen": seen, "query": "", **extra}
    )


def test_it_ignores_selected_events_only_with_a_reason(login, users, world):
    c = login(users["triager"])
    ids = [world["ssh"].pk, world["mysql"].pk]
    triage(c, ids, "ignore")
    assert set(AlertEvent.objects.filter(pk__in=ids).values_list("state", flat=True)) == {"new"}
    assert "ignore: give a reason" in c.get("/events/").content.decode()
    triage(c, ids, "ignore", reason="test hosts")
    assert set(AlertEvent.objects.filter(pk__in=ids).values_list("state", flat=True)) == {"ignored"}
    notes = {n.text for e in AlertEvent.objects.filter(pk__in=ids) for n in e.notes.all()}
    assert notes == {"test hosts"}


def test_it_accepts_a_risk_until_a_date_and_reopens_it_after(login, users, world):
    c = login(users["triager"])
    ssh = world["ssh"]
    day = timezone.localdate() + timedelta(days=30)
    triage(c, [ssh.pk], "accept", reason="vendor fix due", until=day.isoformat())
    ssh.refresh_from_db()
    assert ssh.state == "ignored" and timezone.localtime(ssh.accepted_until).date() == day
    audit = EventAudit.objects.filter(event=ssh).last()
    assert audit.comment == f"risk accepted until {day}" and audit.actor == users["triager"]
    page = c.get("/events/?state=ignored").content.decode()
    assert f"risk accepted until {day}" in page
    assert "Risk accepted" in c.get(f"/events/{ssh.pk}/").content.decode()
    assert acceptances_lapse(at=timezone.now()) == []  # not yet
    assert acceptances_lapse(at=ssh.accepted_until + timedelta(seconds=1)) == [ssh.pk]
    ssh.refresh_from_db()
    assert ssh.state == "reopened" and ssh.accepted_until is None
    assert "accepted risk lapsed" in EventAudit.objects.filter(event=ssh).last().comment


def test_it_refuses_to_accept_a_risk_without_a_future_date(db, users, world):
    with pytest.raises(TriageError, match="date in the future"):
        events_triage(event_ids=[world["ssh"].pk], action="accept", reason="r", until=None)
    past = timezone.now() - timedelta(days=1)
    with pytest.raises(TriageError, match="date in the future"):
        events_triage(event_ids=[world["ssh"].pk], action="accept", reason="r", until=past)


def test_it_leaves_an_event_someone_else_changed_meanwhile(login, users, world):
    """Two triagers read the same list; the second's bulk action must not overwrite the
    first one's decision on a row it saw in another state."""
    c = login(users["triager"])
    ssh, mysql = world["ssh"], world["mysql"]
    seen = [f"{ssh.pk}:new", f"{mysql.pk}:new"]  # what the page showed
    events_triage(event_ids=[mysql.pk], action="acknowledge", actor=users["admin"])
    response = c.post(
        "/events/bulk/",
        {"ids": [ssh.pk, mysql.pk], "action": "ignore", "reason": "noise", "seen": seen},
        follow=True,
    )
    page = response.content.decode()
    assert f"event {mysql.pk} was changed meanwhile (acknowledged by admin)" in page
    assert AlertEvent.objects.get(pk=mysql.pk).state == "acknowledged"
    assert AlertEvent.objects.get(pk=ssh.pk).state == "ignored"
    assert "1 event(s) now ignored" in page


def test_it_reports_ids_that_do_not_exist_and_changes_the_rest(db, users, world):
    result = events_triage(event_ids=[world["ssh"].pk, 999999], action="fix", actor=None)
    assert result.changed == [world["ssh"].pk]
    assert result.refused == {999999: "event 999999 does not exist"}


@pytest.mark.parametrize("who", ["viewer", "nobody"])
def test_it_refuses_bulk_changes_to_a_read_only_role(login, users, world, who):
    c = login(users[who])
    ids = [world["ssh"].pk, world["mysql"].pk]
    response = c.post("/events/bulk/", {"ids": ids, "action": "fix"})
    assert response.status_code == 403
    assert set(AlertEvent.objects.filter(pk__in=ids).values_list("state", flat=True)) == {"new"}
    if who == "viewer":
        page = c.get("/events/").content.decode()
        assert 'id="bulk"' not in page and 'id="select-all"' not in page
    else:
        assert c.get("/events/").status_code == 403  # no role: not even the list


def test_it_prefills_a_rule_from_an_event_with_owner_labels_and_the_dry_run(login, users, world):
    c = login(users["admin"])
    response = c.get(f"/rules/new/?from_event={world['mysql'].pk}")
    form = response.context["form"]
    assert form.initial["owner"] == "a@x.org"  # the network's owner
    assert response.context["preview"]["open_count"] == 1
    page = response.content.decode()
    assert "IP / CIDR" in page and "Port from" in page and "Port to" in page
    assert "Ip cidr" not in page and "Port lo" not in page
    assert page.count('class="required"') >= 3  # action, reason, owner marked
    assert "Dry run: 1 open event match" in page
    # A network without an owner: the person writing the rule.
    gone = c.get(f"/rules/new/?from_event={world['gone'].pk}").context["form"]
    assert gone.initial["owner"] == "admin@example.com"


def test_it_dry_runs_without_owner_or_reason(login, users, world):
    c = login(users["admin"])
    response = c.post(
        "/rules/new/", {"action": "allow", "ip_cidr": "198.18.0.0/24", "proto": "any", "preview": 1}
    )
    assert response.status_code == 200
    assert response.context["preview"]["open_count"] == 2  # ssh and mysql
    assert "This field is required" not in response.content.decode()


def test_it_saves_an_allow_rule_from_an_event_and_resolves_what_it_matches(login, users, world):
    c = login(users["admin"])
    a = world["a"]
    other = event(a, 3306, "service_changed", detail={"zone": "internal"})
    elsewhere = event(world["b"], 3306, "new_port")
    mysql = world["mysql"]
    initial = c.get(f"/rules/new/?from_event={mysql.pk}").context["form"].initial
    fields = {k: v for k, v in initial.items() if v is not None}
    response = c.post(f"/rules/new/?from_event={mysql.pk}", {**fields, "save": "1"})
    assert response.status_code == 302 and response["Location"] == f"/events/{mysql.pk}/"
    rule = Rule.objects.get(ip_cidr="198.18.0.10")
    states = dict(AlertEvent.objects.values_list("pk", "state"))
    assert states[mysql.pk] == states[other.pk] == "ignored"
    assert states[elsewhere.pk] == "new" and states[world["ssh"].pk] == "new"
    row = EventAudit.objects.filter(event=mysql).last()
    assert row.action == "rule" and row.comment.startswith(f"allowed by rule #{rule.pk}")
    assert row.actor == users["admin"]
    assert AlertEvent.objects.get(pk=other.pk).rule_id == rule.pk
    entry = AuditEntry.objects.get(action="rule.resolve")
    assert entry.object_id == str(rule.pk) and entry.after["events_resolved"] == 2
    page = c.get(f"/events/{mysql.pk}/").content.decode()
    assert "2 open event(s) it matches resolved" in page
    assert f"allowed by rule #{rule.pk}" in page


def test_it_saves_a_rule_that_matches_no_open_event(login, users, world):
    c = login(users["admin"])
    data = {
        "action": "allow", "ip_cidr": "203.0.113.7", "proto": "any", "reason": "none",
        "owner": "me", "enabled": "on", "resolve_open": "on",
    }  # fmt: skip
    preview = c.post("/rules/new/", {**data, "preview": 1})
    assert "Dry run: 0 open events match" in preview.content.decode()
    assert "matches no open event" in preview.content.decode()
    c.post("/rules/new/", {**data, "save": 1})
    assert Rule.objects.filter(ip_cidr="203.0.113.7").exists()
    assert not AuditEntry.objects.filter(action="rule.resolve").exists()


def test_it_dry_runs_and_resolves_thousands_of_matches(login, users, world):
    now = timezone.now()
    hosts = Host.objects.bulk_create(
        [Host(ip=f"198.18.0.{i}", network=world["net"]) for i in range(100, 200)]
    )
    AlertEvent.objects.bulk_create(
        [
            AlertEvent(
                host=h,
                port=p,
                kind="new_port",
                created_at=now,
                updated_at=now,
                detail={"zone": "internal"},
                open_key=f"{h.pk}/tcp/{p}/new_port",
            )  # fmt: skip
            for h in hosts
            for p in range(1000, 1030)
        ]
    )
    c = login(users["admin"])
    data = {
        "action": "allow", "ip_cidr": "198.18.0.0/24", "port_lo": 1000, "port_hi": 2000,
        "proto": "any", "reason": "lab range", "owner": "me", "enabled": "on",
        "resolve_open": "on",
    }  # fmt: skip
    preview = c.post("/rules/new/", {**data, "preview": 1})
    assert preview.context["preview"]["open_count"] == 3000
    assert len(preview.context["preview"]["rows"]) == 50  # the page lists the worst 50
    assert "Dry run: 3000 open events match" in preview.content.decode()
    response = c.post("/rules/new/", {**data, "save": 1}, follow=True)
    assert "3000 open event(s) it matches resolved" in response.content.decode()
    assert AlertEvent.objects.filter(port__gte=1000, state="ignored").count() == 3000
    assert AlertEvent.objects.get(pk=world["ssh"].pk).state == "new"


def test_it_finds_the_old_product_of_a_service_change(login, users, world):
    Port.objects.filter(host=world["a"], port=22).update(product="nginx")
    changed = event(
        world["a"],
        22,
        "service_changed",
        detail={"zone": "internal", "old": {"product": "Apache httpd"}, "new": {"product": "x"}},
    )
    assert ids_on(login(users["viewer"]).get("/events/", {"q": "apache"})) == [changed.pk]


def test_it_matches_a_common_service_port_by_port(login, users, world, monkeypatch):
    """A word naming many ports is matched row by row, with the same result."""
    from alerts import selectors

    c = login(users["viewer"])
    few = ids_on(c.get("/events/", {"q": "ssh"}))
    monkeypatch.setattr(selectors, "SEARCH_PORT_PAIRS", 0)
    assert ids_on(c.get("/events/", {"q": "ssh"})) == few == [world["ssh"].pk]


def test_it_says_more_than_the_cap_instead_of_counting_every_match(
    login, users, world, monkeypatch
):
    from alerts import selectors

    monkeypatch.setattr(selectors, "SEARCH_COUNT_CAP", 2)
    response = login(users["viewer"]).get("/events/", {"q": "198.18"})
    assert "more than 2 events: narrow the search" in response.content.decode()
    assert len(ids_on(response)) == 3  # a page is still listed, as far as the count goes
    response = login(users["viewer"]).get("/events/", {"q": "198.18.1"})
    assert "2 events" in response.content.decode()


def test_it_gives_the_api_the_same_search_and_order(login, users, world):
    c = login(users["viewer"])
    answer = c.get("/api/events/", {"q": "3306"}).json()
    assert [e["id"] for e in answer["results"]] == [world["mysql"].pk]
    ordered = c.get("/api/events/", {"sort": "severity", "state": "open"}).json()["results"]
    assert ordered[0]["id"] == world["mysql"].pk  # the only high one
    assert c.get("/api/events/", {"sort": "sideways"}).status_code == 400
