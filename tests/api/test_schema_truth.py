"""The OpenAPI schema tells the truth: every answer the API gives is one the schema
documents (a small schemathesis: every operation with junk input, as every role)."""

import json

import pytest
from rest_framework.test import APIClient

from accounts.services import api_token_issue

JUNK_QUERY = ["junk", "", "-1", "0", "99999999999999999999", "1e3", "\u0661", "%00"]


@pytest.fixture
def schema(users):
    client = APIClient()
    client.force_login(users["viewer"])
    answer = client.get("/api/schema/", {"format": "json"})
    assert answer.status_code == 200
    return json.loads(answer.content)


def test_it_says_what_is_nullable_listed_and_required(schema):
    parts = schema["components"]["schemas"]
    assert parts["Host"]["properties"]["network"]["nullable"] is True
    assert parts["Audit"]["properties"]["actor"]["nullable"] is True
    assert parts["Network"]["properties"]["cidr"]["minLength"] == 1
    for path in ("/api/rules/{id}/dry-run/", "/api/rules/dry-run/"):
        body = schema["paths"][path]["post"]["responses"]["200"]["content"]["application/json"]
        assert body["schema"]["type"] == "array"


def test_it_answers_unknown_filter_values_and_pages_with_400(api_client):
    client = api_client("viewer")
    assert client.get("/api/ports/", {"state": "junk"}).status_code == 400
    for page in ("junk", "0", "-1", "1.5", "\u0661"):
        answer = client.get("/api/hosts/", {"page": page})
        assert answer.status_code == 400 and "page" in answer.json()["detail"], page
    assert client.get("/api/hosts/", {"page": "99999"}).status_code == 404
    assert client.get("/api/ports/", {"state": "open"}).status_code == 200


@pytest.fixture
def api_client(users):
    def as_(role):
        client = APIClient()
        if role:
            client.credentials(
                HTTP_AUTHORIZATION=f"Token {api_token_issue(user=users[role]).token}"
            )
        return client

    return as_


def calls(schema):
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            url = path.replace("{id}", "999999").replace("{ip}", "198.18.0.10")
            queries = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]
            yield method, url, operation, queries


@pytest.mark.parametrize("role", [None, "nobody", "viewer", "admin"])
def test_it_documents_every_answer_to_junk_input(schema, api_client, world, settings, role):
    settings.AXES_FAILURE_LIMIT = 10_000  # this test is not about lockouts
    client = api_client(role)
    seen, sent = set(), 0
    for method, url, operation, queries in calls(schema):
        documented = set(operation["responses"])
        requests = [{}] + [{name: junk} for name in queries for junk in JUNK_QUERY]
        bodies = [None, {}, {"cidr": ""}, {"targets": "\x00"}, [1], "not json"]
        for query in requests if method == "get" else [{}]:
            for body in bodies if method in ("post", "put", "patch") else [None]:
                answer = getattr(client, method)(url + _query(query), body, format="json")
                status = str(answer.status_code)
                seen.add(status)
                sent += 1
                assert status in documented, (
                    method,
                    url,
                    query,
                    body,
                    status,
                    answer.content[:300],
                )
                assert answer.status_code < 500
    assert sent > 200 and seen - {"200", "201"}  # the junk did reach the error paths


def _query(params: dict) -> str:
    from urllib.parse import urlencode

    return "?" + urlencode(params) if params else ""
