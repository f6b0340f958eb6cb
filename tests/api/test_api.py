"""The REST API: every endpoint for each role, tokens, pagination, the OpenAPI schema."""

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from accounts.services import api_token_issue
from alerts.models import AlertEvent, EventNote, Rule
from audit.models import AuditEntry
from scanner.models import Network, ScanPolicy, ScanRun
from scanner.services import publish
from tests.dashboard.conftest import event

READS = [
    "/api/hosts/",
    "/api/hosts/198.18.0.10/",
    "/api/ports/?state=open",
    "/api/events/",
    "/api/rules/",
    "/api/networks/",
    "/api/policies/",
    "/api/runs/",
]


@pytest.fixture
def api(users):
    def as_(role):
        client = APIClient()
        if role:
            token = api_token_issue(user=users[role]).token
            client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        return client

    return as_


@pytest.mark.parametrize(
    "role,status", [(None, 401), ("nobody", 403), ("viewer", 200), ("triager", 200), ("admin", 200)]
)
def test_it_answers_reads_by_role(api, world, role, status):
    client = api(role)
    for path in [*READS, f"/api/events/{world['ssh'].pk}/", f"/api/runs/{world['run'].pk}/"]:
        assert client.get(path).status_code == status, path


def test_it_filters_and_pages_events(api, world):
    client = api("viewer")
    body = client.get("/api/events/?severity=high").json()
    assert body["count"] == 1 and body["results"][0]["severity"] == "high"
    assert body["results"][0]["url"] == f"/events/{world['mysql'].pk}/"
    assert client.get("/api/events/?port=abc").status_code == 400
    for port in range(1, 51):
        event(world["a"], 10000 + port, "new_port")
    first = client.get("/api/events/").json()
    assert first["count"] == 54 and len(first["results"]) == 50 and first["next"]
    second = client.get(first["next"]).json()["results"]
    newest_first = AlertEvent.objects.order_by("-created_at", "-id")
    assert [e["id"] for e in first["results"] + second] == list(
        newest_first.values_list("pk", flat=True)
    )
    assert {e["ip"] for e in second} == {"198.18.0.10", "198.18.1.20"}
    run = client.get(f"/api/runs/{world['run'].pk}/").json()
    assert [s["state"] for s in run["shards"]] == ["done", "failed"]


@pytest.mark.parametrize("role,status", [("viewer", 403), ("triager", 200), ("admin", 200)])
def test_it_changes_event_state_for_triagers_only(api, world, role, status):
    ssh = world["ssh"]
    response = api(role).post(
        f"/api/events/{ssh.pk}/transition/",
        {"to_state": "acknowledged", "note": "seen"},
        format="json",
    )
    assert response.status_code == status
    expected = "acknowledged" if status == 200 else "new"
    assert AlertEvent.objects.get(pk=ssh.pk).state == expected
    if status == 200:
        assert response.json()["notes"][0]["text"] == "seen"
        assert AuditEntry.objects.filter(action="event.transition", actor__username=role).exists()


def test_it_triages_in_bulk_and_adds_notes(api, world):
    client = api("triager")
    AlertEvent.objects.filter(pk=world["gone"].pk).update(state="fixed", open_key=None)
    body = client.post(
        "/api/events/transition/",
        {"ids": [world["ssh"].pk, world["gone"].pk, 999999], "to_state": "ignored"},
        format="json",
    ).json()
    assert body["changed"] == [world["ssh"].pk]
    assert set(body["refused"]) == {str(world["gone"].pk), "999999"}
    assert (
        client.post(
            f"/api/events/{world['ssh'].pk}/transition/", {"to_state": "ignored"}, format="json"
        ).status_code
        == 409
    )
    note = client.post(f"/api/events/{world['web'].pk}/notes/", {"text": "ok"}, format="json")
    assert note.status_code == 201 and EventNote.objects.get(event=world["web"]).text == "ok"
    assert (
        client.post(
            f"/api/events/{world['web'].pk}/notes/", {"text": ""}, format="json"
        ).status_code
        == 400
    )
    assert (
        api("viewer")
        .post(f"/api/events/{world['web'].pk}/notes/", {"text": "x"}, format="json")
        .status_code
        == 403
    )


def test_it_manages_rules_for_admins_with_a_dry_run(api, world):
    draft = {
        "action": "allow",
        "ip_cidr": "198.18.0.10",
        "port_lo": 3306,
        "proto": "tcp",
        "reason": "dba",
        "owner": "dba",
    }
    assert api("triager").post("/api/rules/", draft, format="json").status_code == 403
    admin = api("admin")
    matched = admin.post("/api/rules/dry-run/", draft, format="json").json()
    assert [e["id"] for e in matched] == [world["mysql"].pk]
    created = admin.post("/api/rules/", draft, format="json")
    assert created.status_code == 201
    rule_id = created.json()["id"]
    assert (
        admin.patch(f"/api/rules/{rule_id}/", {"reason": "dba team"}, format="json").json()[
            "reason"
        ]
        == "dba team"
    )
    assert admin.post(f"/api/rules/{rule_id}/dry-run/").json()[0]["id"] == world["mysql"].pk
    assert admin.post(f"/api/rules/{rule_id}/expire/").json()["expires_at"]
    bad = admin.post("/api/rules/", {**draft, "ip_cidr": "198.18.0.0/40"}, format="json")
    assert bad.status_code == 400 and Rule.objects.count() == 2
    entries = AuditEntry.objects.filter(object_type="alerts.rule", object_id=str(rule_id))
    actions = set(entries.values_list("action", flat=True))
    assert actions == {"rule.create", "rule.update"}


def test_it_manages_networks_policies_and_runs_for_admins(api, world, monkeypatch):
    monkeypatch.setattr(publish, "shards_publish", lambda **kw: None)
    admin = api("admin")
    assert (
        api("triager").post("/api/networks/", {"cidr": "198.18.2.0/24"}, format="json").status_code
        == 403
    )
    assert (
        admin.post(
            "/api/networks/", {"cidr": "198.18.2.0/24", "zone": "internal"}, format="json"
        ).status_code
        == 201
    )
    overlap = admin.post("/api/networks/", {"cidr": "198.18.2.0/25"}, format="json")
    assert overlap.status_code == 400 and "overlaps" in overlap.json()["detail"]
    policy = admin.post(
        "/api/policies/",
        {"name": "lab", "targets": "198.18.2.0/28", "ports": "22,80", "schedule": "0 3 * * *"},
        format="json",
    )
    assert policy.status_code == 201
    bad = admin.post(
        "/api/policies/", {"name": "bad", "targets": "8.8.8.8", "ports": "0"}, format="json"
    )
    assert bad.status_code == 400
    run = admin.post(f"/api/policies/{policy.json()['id']}/run/")
    assert run.status_code == 201 and run.json()["state"] == "sweeping"
    assert admin.post(f"/api/policies/{policy.json()['id']}/run/").status_code == 409
    adhoc = admin.post("/api/runs/", {"targets": "198.18.2.5", "ports": "443"}, format="json")
    assert adhoc.status_code == 201
    refused = admin.post("/api/runs/", {"targets": "192.0.2.1", "ports": "443"}, format="json")
    assert refused.status_code == 400
    assert (
        api("triager").post("/api/runs/", {"targets": "198.18.2.5"}, format="json").status_code
        == 403
    )
    assert ScanRun.objects.filter(source="scan").count() == 3
    assert AuditEntry.objects.filter(action="scanrun.start", actor__username="admin").count() == 2
    assert Network.objects.filter(cidr="198.18.2.0/24").exists()
    assert ScanPolicy.objects.filter(name="lab").exists()


def test_it_accepts_the_browser_session_too(client, users, world):
    client.force_login(users["viewer"])
    assert client.get("/api/events/").status_code == 200


def test_it_publishes_a_schema_that_validates(api, users, tmp_path):
    call_command(
        "spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yml")
    )
    assert "/api/events/{id}/transition/" in (tmp_path / "schema.yml").read_text()
    assert api("viewer").get("/api/schema/").status_code == 200
    docs = api("viewer").get("/api/docs/")
    assert docs.status_code == 200 and b"cdn" not in docs.content.lower()
