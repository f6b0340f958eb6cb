"""manage.py rules export / import: a rule set moved between installations, strictly
checked, dry run first, idempotent and audit-logged."""

import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from alerts.models import AlertEvent, Rule
from audit.models import AuditEntry
from scanner.models import Host, Network


@pytest.fixture
def rules(db):
    Rule.objects.create(
        action="allow", ip_cidr="198.18.0.0/24", port_lo=22, proto="tcp", reason="bastions",
        owner="secops",
    )  # fmt: skip
    Rule.objects.create(action="deny", port_lo=23, reason="no telnet", owner="neteng")
    net = Network.objects.create(cidr="198.18.0.0/24", zone="internal")
    host = Host.objects.create(ip="198.18.0.7", network=net)
    for port in (22, 22, 23):
        AlertEvent.objects.create(host=host, port=port, kind="new_port", created_at=timezone.now())


def export(tmp_path) -> dict:
    path = tmp_path / "rules.json"
    call_command("rules", "export", str(path))
    return json.loads(path.read_text())


def test_it_exports_every_rule_without_ids_or_counters(rules, tmp_path):
    doc = export(tmp_path)
    assert doc["format"] == "portmon-rules" and doc["version"] == 1
    assert [(r["action"], r["port_lo"], r["reason"]) for r in doc["rules"]] == [
        ("allow", 22, "bastions"),
        ("deny", 23, "no telnet"),
    ]
    assert not {"id", "hit_count", "created_at"} & set(doc["rules"][0])


def test_it_imports_into_another_installation_and_not_twice(rules, tmp_path, capsys):
    doc = export(tmp_path)
    Rule.objects.all().delete()
    path = tmp_path / "rules.json"
    call_command("rules", "import", str(path), "--dry-run")
    out = capsys.readouterr().out
    assert "create    allow 198.18.0.0/24 port 22-22/tcp: 2 event(s) of the last 7 days" in out
    assert "create    deny any port 23-23/any: 1 event(s)" in out
    assert "dry run, nothing written: 2 created, 0 updated, 0 unchanged" in out
    assert Rule.objects.count() == 0

    call_command("rules", "import", str(path))
    assert "imported: 2 created, 0 updated, 0 unchanged" in capsys.readouterr().out
    call_command("rules", "import", str(path))
    assert "imported: 0 created, 0 updated, 2 unchanged" in capsys.readouterr().out
    assert sorted(Rule.objects.values_list("reason", flat=True)) == ["bastions", "no telnet"]
    assert AuditEntry.objects.filter(action="rule.create").count() == 2 + len(doc["rules"])


def test_it_updates_a_rule_that_matches_the_same_traffic(rules, tmp_path, capsys):
    doc = export(tmp_path)
    doc["rules"][1]["reason"] = "telnet is banned"
    doc["rules"][1]["enabled"] = False
    path = tmp_path / "changed.json"
    path.write_text(json.dumps(doc))
    call_command("rules", "import", str(path))
    deny = Rule.objects.get(action="deny")
    assert (deny.reason, deny.enabled, Rule.objects.count()) == ("telnet is banned", False, 2)
    entry = AuditEntry.objects.get(action="rule.update", object_id=str(deny.pk))
    assert entry.before["reason"] == "no telnet" and entry.after["reason"] == "telnet is banned"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x00\xff not json", "not UTF-8"),
        (b'{"format": "portmon-rules", "version": 1, "rules": [{"action": "allow"}]}',
         "rules[0].reason: missing"),
        (b'{"format": "portmon-rules", "version": 1, "rules": [{"action": "allow", '
         b'"reason": "r", "owner": "o", "ip_cidr": "10.0.0.1/8"}]}', "rules[0].ip_cidr:"),
        (b'{"format": "portmon-rules", "version": 1, "rules": [{"action": "allow", '
         b'"reason": "r", "owner": "o", "process": "../../bin/sh"}]}', "rules[0].process:"),
        (b'{"format": "portmon-rules", "version": 1, "rules": [], "sql": "DROP TABLE"}',
         "sql: unknown field"),
    ],
)  # fmt: skip
def test_it_refuses_a_bad_file_naming_the_field_and_writes_nothing(
    rules, tmp_path, content, message
):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(CommandError) as exc:
        call_command("rules", "import", str(path))
    assert message in str(exc.value)
    assert Rule.objects.count() == 2


def test_it_names_a_missing_file(db, tmp_path):
    with pytest.raises(CommandError, match="No such file"):
        call_command("rules", "import", str(tmp_path / "nope.json"))
