"""Rule fields are defined once (alerts.rules, alerts.rule_files.RuleEntry): the model, the
dashboard's form, the admin, the API and rule files name the same ones, and a rule with
every field set goes through API -> export -> import without losing one."""

import json
from datetime import UTC, datetime

import pytest
from django.contrib import admin as django_admin
from rest_framework.test import APIClient

from accounts.services import api_token_issue
from alerts.models import RULE_KEPT_FIELDS, Rule
from alerts.rule_files import (
    RULE_FIELDS,
    RuleFileError,
    rule_entry_parse,
    rules_document_dump,
    rules_document_parse,
)
from alerts.rules import MATCH_FIELDS, MAX_LEN, RuleProto, RuleSpec
from alerts.selectors import rule_entries_load, rule_spec_of
from alerts.services.rules import rules_import
from api.serializers import RuleSerializer
from dashboard.forms import RuleForm

# Every field a person sets, none at its default.
EVERYTHING = {
    "action": "deny",
    "ip_cidr": "198.18.4.0/24",
    "process": "nc*",
    "port_lo": 4000,
    "port_hi": 4100,
    "proto": "udp",
    "zone": "internal",
    "reason": "no listeners there",
    "owner": "secops",
    "expires_at": "2027-03-01T12:00:00Z",
    "enabled": False,
}


@pytest.fixture
def admin(users):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token_issue(user=users['admin']).token}")
    return client


def test_it_names_the_same_rule_fields_everywhere(db):
    columns = {f.name for f in Rule._meta.concrete_fields} - {"id"}
    assert set(EVERYTHING) == set(RULE_FIELDS) == columns - set(RULE_KEPT_FIELDS)
    # The dashboard's form has the rule's fields, in order, and one of its own: whether saving
    # resolves the open events the rule matches (an action, not a column).
    assert list(RuleForm().fields) == [*RULE_FIELDS, "resolve_open"]
    api_fields = RuleSerializer().fields
    assert {n for n, f in api_fields.items() if not f.read_only} == set(RULE_FIELDS)
    assert {n for n, f in api_fields.items() if f.read_only} == {"id", *RULE_KEPT_FIELDS}
    assert set(django_admin.site._registry[Rule].list_display) == {"id", *columns}
    assert set(MATCH_FIELDS) == set(RULE_FIELDS) - {"reason", "owner"}
    assert {n: Rule._meta.get_field(n).max_length for n in MAX_LEN} == MAX_LEN
    assert Rule._meta.get_field("proto").choices == RuleProto.choices


def test_it_moves_a_rule_with_every_field_set_through_the_api_and_a_rules_file(admin):
    created = admin.post("/api/rules/", EVERYTHING, format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert {name: body[name] for name in RULE_FIELDS} == EVERYTHING

    # What the matcher gets from the saved rule: each match field, none dropped.
    rule = Rule.objects.get(pk=body["id"])
    assert rule_spec_of(rule) == RuleSpec(id=rule.pk, **{n: getattr(rule, n) for n in MATCH_FIELDS})
    assert rule_spec_of(rule).port_hi == 4100 and rule_spec_of(rule).process == "nc*"

    # Exported as `rules export` and the rules page write it, and read back.
    entries = [entry for _, entry in rule_entries_load()]
    doc = json.loads(rules_document_dump(entries, exported_at=datetime.now(UTC)))
    assert doc["rules"] == [{**EVERYTHING, "expires_at": "2027-03-01T12:00:00+00:00"}]
    (parsed,) = rules_document_parse(json.dumps(doc))
    assert parsed == entries[0]
    assert parsed.expires_at == datetime(2027, 3, 1, 12, tzinfo=UTC)

    # Imported elsewhere (here: after the rule is gone) it comes back field for field.
    Rule.objects.all().delete()
    (item,) = rules_import(entries=[parsed])
    assert item.change == "create"
    again = admin.get(f"/api/rules/{Rule.objects.get().pk}/").json()
    assert {name: again[name] for name in RULE_FIELDS} == EVERYTHING
    assert [i.change for i in rules_import(entries=[parsed])] == ["unchanged"]


@pytest.mark.parametrize("kept", RULE_KEPT_FIELDS)
def test_it_refuses_a_rules_file_that_sets_what_portmon_keeps(kept):
    with pytest.raises(RuleFileError, match=f"rule.{kept}: unknown field"):
        rule_entry_parse({**EVERYTHING, kept: 3})


def test_it_refuses_a_rules_file_entry_missing_a_required_field():
    for name in ("action", "reason", "owner"):
        with pytest.raises(RuleFileError, match=f"rule.{name}: missing"):
            rule_entry_parse({k: v for k, v in EVERYTHING.items() if k != name})
