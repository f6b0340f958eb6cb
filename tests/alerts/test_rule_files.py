"""Rules files: strict parsing (hostile input refused with the field named) and the import
plan (pure, no database)."""

import json
from datetime import UTC, datetime

import pytest

from alerts.rule_files import (
    CREATE,
    UNCHANGED,
    UPDATE,
    RuleEntry,
    RuleFileError,
    rules_document_dump,
    rules_document_parse,
    rules_import_plan,
)

SSH = {"action": "allow", "ip_cidr": "198.18.0.0/24", "port_lo": 22, "proto": "tcp",
       "reason": "bastions", "owner": "secops"}  # fmt: skip


def doc(*rules, **extra) -> str:
    return json.dumps({"format": "portmon-rules", "version": 1, "rules": list(rules), **extra})


def test_it_reads_back_what_it_wrote():
    entries = [
        RuleEntry(action="deny", reason="no telnet", owner="neteng", port_lo=23, proto="tcp"),
        RuleEntry(
            action="allow",
            reason="build agents",
            owner="ci",
            ip_cidr="2001:db8::/64",
            process="java*",
            port_lo=8000,
            port_hi=8099,
            zone="internal",
            expires_at=datetime(2027, 1, 1, tzinfo=UTC),
            enabled=False,
        ),
    ]
    text = rules_document_dump(entries, exported_at=datetime(2026, 11, 21, tzinfo=UTC))
    assert rules_document_parse(text.encode()) == entries


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({**SSH, "colour": "red"}, "rules[0].colour: unknown field"),
        ({**SSH, "ip_cidr": "198.18.0.1/24"}, "rules[0].ip_cidr: "),
        ({**SSH, "ip_cidr": "10.0.0.0/33"}, "rules[0].ip_cidr: "),
        ({**SSH, "ip_cidr": ["10.0.0.0/8"]}, "rules[0].ip_cidr: must be a string"),
        ({**SSH, "port_lo": 0}, "rules[0].port_lo: 0 is outside 1-65535"),
        ({**SSH, "port_lo": 70000}, "rules[0].port_lo: 70000 is outside"),
        ({**SSH, "port_lo": "22"}, "rules[0].port_lo: must be an integer"),
        ({**SSH, "port_lo": True}, "rules[0].port_lo: must be an integer"),
        ({**SSH, "port_lo": 22.0}, "rules[0].port_lo: must be an integer"),
        ({**SSH, "port_lo": 90, "port_hi": 80}, "rules[0].port_hi: port range 90-80 is reversed"),
        ({**SSH, "port_lo": None, "port_hi": 80}, "rules[0].port_hi: a port range needs"),
        ({**SSH, "process": "/usr/bin/sshd"}, "rules[0].process: a process glob is a name"),
        ({**SSH, "process": "ssh\u0000d"}, "rules[0].process: control characters"),
        ({**SSH, "action": "drop"}, "rules[0].action: 'drop' is not one of"),
        ({**SSH, "action": None}, "rules[0].action: "),
        ({**SSH, "proto": "icmp"}, "rules[0].proto: 'icmp' is not one of"),
        ({**SSH, "zone": "dmz"}, "rules[0].zone: 'dmz' is not one of"),
        ({**SSH, "enabled": "yes"}, "rules[0].enabled: must be true or false"),
        ({**SSH, "expires_at": "tomorrow"}, "rules[0].expires_at: 'tomorrow' is not an ISO"),
        ({**SSH, "expires_at": "2027-01-01T00:00:00"}, "rules[0].expires_at: needs a time zone"),
        ({**SSH, "reason": "x" * 301}, "rules[0].reason: longer than 300"),
        ({**SSH, "owner": "  "}, "rules[0].owner: must not be empty"),
        ({k: v for k, v in SSH.items() if k != "owner"}, "rules[0].owner: missing"),
        ("allow all", "rules[0]: must be an object"),
    ],
)
def test_it_refuses_a_bad_rule_naming_the_field(rule, message):
    with pytest.raises(RuleFileError) as exc:
        rules_document_parse(doc(SSH, rule).replace("rules[0]", "rules[1]"))
    assert str(exc.value).startswith(message.replace("rules[0]", "rules[1]"))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\xff\xfe{}", "the file is not UTF-8 text"),
        (b"", "not valid JSON"),
        (b"[]", "the top level must be an object"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"rules": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
        (doc(SSH, extra=1).encode(), "extra: unknown field"),
        (doc(SSH).replace("portmon-rules", "other").encode(), "format: must be 'portmon-rules'"),
        (doc(SSH).replace('"version": 1', '"version": 2').encode(), "version: only version 1"),
        (doc(SSH).replace('"version": 1', '"version": true').encode(), "version: only version 1"),
        (b'{"format": "portmon-rules", "version": 1, "rules": {}}', "rules: must be a list"),
        (doc({**SSH, "port_lo": 1}).replace('"port_lo": 1', '"port_lo": NaN').encode(), "NaN"),
        (
            doc(SSH).replace('"port_lo": 22', '"port_lo": 22, "port_lo": 23').encode(),
            "port_lo: given twice",
        ),  # noqa: E501
        (doc(SSH).replace('"port_lo": 22', '"port_lo": ' + "9" * 5000).encode(), "not valid JSON"),
        (doc(*[SSH] * 5001).encode(), "rules: more than 5000 rules"),
        (b" " * (1024 * 1024 + 1), "the file is larger than 1024 KiB"),
    ],
    ids=lambda v: repr(v)[:40] if isinstance(v, bytes) else None,
)
def test_it_refuses_a_hostile_document_with_one_line(raw, message):
    with pytest.raises(RuleFileError) as exc:
        rules_document_parse(raw)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def entry(**kw) -> RuleEntry:
    return rules_document_parse(doc({**SSH, **kw}))[0]


def test_it_plans_create_update_and_unchanged_by_the_fields_of_a_rule():
    existing = [(7, entry()), (9, entry(port_lo=443, reason="web"))]
    plan = rules_import_plan(
        [
            entry(ip_cidr="198.18.0.0/24"),  # equal to #7
            entry(port_lo=443, reason="web servers", owner="webops"),  # same match as #9
            entry(port_lo=3306),  # new
            entry(port_lo=3306),  # the same again in the file
        ],
        existing,
    )
    assert [(p.change, p.rule_id, p.changed_fields) for p in plan] == [
        (UNCHANGED, 7, ()),
        (UPDATE, 9, ("reason", "owner")),
        (CREATE, None, ()),
        (UNCHANGED, None, ()),
    ]


def test_it_treats_a_cidr_written_another_way_as_the_same_rule():
    existing = [(3, entry(ip_cidr="2001:db8::/64", port_hi=22))]
    [item] = rules_import_plan([entry(ip_cidr="2001:0db8:0::/64")], existing)
    assert (item.change, item.rule_id) == (UNCHANGED, 3)
