"""A Content-Security-Policy on every page, that every page still works under (no inline
script, no inline handler); the API schema and its docs need a login like every page."""

import re

import pytest
from django.contrib.staticfiles import finders

from accounts.services import api_token_issue

PAGES = [
    "/", "/since/", "/events/", "/hosts/", "/hosts/198.18.0.10/", "/runs/", "/rules/",
    "/rules/new/", "/rules/import/", "/networks/", "/agents/", "/policies/", "/audit/",
    "/admin/", "/admin/scanner/network/add/", "/admin/scanner/network/", "/admin/auth/user/",
    "/api/docs/",
]  # fmt: skip
SCRIPT = re.compile(r"<script\b([^>]*)>(.*?)</script>", re.S | re.I)
HANDLER = re.compile(r"<[^>]+\son[a-z]+\s*=", re.I)


@pytest.fixture
def admin(client, users, world):
    users["admin"].is_staff = users["admin"].is_superuser = True
    users["admin"].save()
    client.force_login(users["admin"])
    return client


def test_it_sends_a_policy_that_allows_only_this_sites_scripts(client, admin):
    for path in [*PAGES, "/accounts/login/", "/api/hosts/", "/metrics", "/healthz"]:
        policy = admin.get(path)["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "unsafe-eval" not in policy, path
        assert "frame-ancestors 'none'" in policy and "object-src 'none'" in policy


@pytest.mark.parametrize("path", [*PAGES, "/accounts/login/"])
def test_it_serves_pages_that_work_under_the_policy(client, admin, path):
    if path == "/accounts/login/":
        client.logout()
    page = client.get(path)
    html = page.content.decode()

    assert page.status_code == 200, path
    for attributes, body in SCRIPT.findall(html):
        # An inline script would be blocked: only scripts loaded from this site, or data.
        assert "src=" in attributes or "application/json" in attributes, (path, body[:200])
        if "src=" in attributes:
            src = re.search(r'src="([^"]+)"', attributes).group(1)
            if src.startswith("/static/"):  # a file this site serves
                assert finders.find(src.removeprefix("/static/")), src
            else:  # or a page of its own (the docs' start script)
                assert src.startswith("/") and client.get(src).status_code == 200, src
    assert not HANDLER.search(html), path
    assert "javascript:" not in html.lower(), path


@pytest.mark.parametrize("path", ["/api/schema/", "/api/docs/", "/api/docs/?script="])
def test_it_keeps_the_api_schema_and_docs_behind_a_login(client, users, path):
    assert client.get(path).status_code in (401, 403)
    client.force_login(users["nobody"])
    assert client.get(path).status_code == 403
    client.force_login(users["viewer"])
    assert client.get(path).status_code == 200
    client.logout()
    token = api_token_issue(user=users["viewer"]).token
    assert client.get(path, HTTP_AUTHORIZATION=f"Token {token}").status_code == 200
