"""Rules export/import on the rules page (admins): dry run first, strict, idempotent,
audit-logged with the admin as the actor."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from alerts.models import Rule
from audit.models import AuditEntry

NEW = {"action": "deny", "ip_cidr": "198.18.0.0/24", "port_lo": 3306, "proto": "tcp",
       "reason": "no databases on the office LAN", "owner": "dba"}  # fmt: skip


def upload(client, content: bytes):
    return client.post(
        "/rules/import/",
        {"file": SimpleUploadedFile("rules.json", content, "application/json"), "preview": "1"},
    )


def test_it_exports_the_rules_as_a_json_download(login, users, world):
    response = login(users["admin"]).get("/rules/export.json")
    assert response["Content-Disposition"].startswith('attachment; filename="portmon-rules-')
    doc = json.loads(response.content)
    assert [r["reason"] for r in doc["rules"]] == ["lab web"]


@pytest.mark.parametrize("role", ["viewer", "triager"])
def test_it_keeps_export_and_import_to_admins(login, users, world, role):
    client = login(users[role])
    assert client.get("/rules/export.json").status_code == 403
    assert client.get("/rules/import/").status_code == 403
    assert upload(client, b"{}").status_code == 403
    assert "Import" not in client.get("/rules/").content.decode()


def test_it_shows_a_dry_run_then_imports_on_confirmation(login, users, world):
    client = login(users["admin"])
    doc = json.loads(client.get("/rules/export.json").content)
    doc["rules"].append(NEW)
    response = upload(client, json.dumps(doc).encode())
    page = response.content.decode()
    preview = response.context["preview"]
    assert [(item.change, matches) for item, matches in preview] == [
        ("unchanged", 2),  # the world's allow rule: 198.18.1.20's two events
        ("create", 1),  # 198.18.0.10:3306 raised today
    ]
    assert "no databases on the office LAN" in page and 'name="apply"' in page
    assert Rule.objects.count() == 1  # nothing written by the dry run

    document = response.context["form"]["document"].value()
    response = client.post("/rules/import/", {"document": document, "apply": "1"}, follow=True)
    assert "1 created, 0 updated, 1 unchanged" in response.content.decode()
    rule = Rule.objects.get(port_lo=3306)
    assert (rule.action, rule.owner) == ("deny", "dba")
    entry = AuditEntry.objects.get(action="rule.create", object_id=str(rule.pk))
    assert entry.actor == users["admin"]

    client.post("/rules/import/", {"document": document, "apply": "1"})
    assert Rule.objects.count() == 2  # the same file again duplicates nothing


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"<rules/>", "not valid JSON"),
        (b"[" * 50_000, "nested too deeply"),
        (json.dumps({"format": "portmon-rules", "version": 1,
                     "rules": [{**NEW, "port_lo": 99999}]}).encode(), "rules[0].port_lo"),
        (json.dumps({"format": "portmon-rules", "version": 1,
                     "rules": [{**NEW, "action": "<script>"}]}).encode(), "rules[0].action"),
        (b" " * (1024 * 1024 + 10), "larger than"),
    ],
)  # fmt: skip
def test_it_refuses_a_hostile_file_with_the_reason_and_writes_nothing(
    login, users, world, content, message
):
    response = upload(login(users["admin"]), content)
    assert response.status_code == 200
    assert message in response.context["error"]
    assert "<script>" not in response.content.decode().replace("&lt;script&gt;", "")
    assert response.context["preview"] is None and Rule.objects.count() == 1


def test_it_checks_the_confirmed_document_again(login, users, world):
    bad = json.dumps({"format": "portmon-rules", "version": 1, "rules": [{**NEW, "zone": "x"}]})
    response = login(users["admin"]).post("/rules/import/", {"document": bad, "apply": "1"})
    assert "rules[0].zone" in response.context["error"] and Rule.objects.count() == 1
