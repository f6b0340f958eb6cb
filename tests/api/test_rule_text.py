"""A rule the API accepts is one `rules export` writes and `rules import` reads back: the
API refuses the text rule files refuse (control characters, lone surrogates)."""

import json
import random

import pytest
from rest_framework.test import APIClient

from accounts.services import api_token_issue
from alerts.models import Rule
from alerts.rule_files import rules_document_parse

DRAFT = {"action": "allow", "proto": "tcp", "reason": "dba", "owner": "dba", "port_lo": 3306}
# Control characters (C0, DEL, C1), a lone surrogate, and text that is fine: bidi
# overrides, line separators, globs, accents, CJK, spaces.
ALPHABET = [
    "\x1b", "\t", "\r", "\x7f", "\x85", "\x9b", "\ud800",
    "\u202e", "\u2028", "*", "?", "[", "]", "é", "日", " ", "n", "c", "-", ".", "'", '"', "\\",
]  # fmt: skip


@pytest.fixture
def admin(users):
    client = APIClient()
    token = api_token_issue(user=users["admin"]).token
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def post(client, body: dict):
    # Escaped JSON (ensure_ascii): a lone surrogate can be sent only as \ud800.
    return client.generic("POST", "/api/rules/", json.dumps(body), "application/json")


@pytest.mark.parametrize("field", ["process", "reason", "owner"])
@pytest.mark.parametrize("text", ["nc\x1b[31m", "a\tb", "x\x7f", "y\x85z", "z\ud800"])
def test_it_refuses_text_a_rule_file_could_not_hold(admin, field, text):
    answer = post(admin, {**DRAFT, field: text})

    assert answer.status_code == 400, answer.content
    assert field in str(answer.json()), answer.json()
    assert not Rule.objects.exists()


def test_it_exports_only_rules_that_import_again(admin, client, users):
    rng = random.Random(20)
    accepted = 0
    for i in range(150):
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 10))).strip() or "x"
        field = rng.choice(["process", "reason", "owner"])
        answer = post(admin, {**DRAFT, field: text, "port_lo": 1000 + i})
        assert answer.status_code in (201, 400), (text, answer.content)
        accepted += answer.status_code == 201
    client.force_login(users["admin"])

    exported = client.get("/rules/export.json")

    assert exported.status_code == 200
    assert len(rules_document_parse(exported.content)) == Rule.objects.count() == accepted
    assert accepted >= 20
