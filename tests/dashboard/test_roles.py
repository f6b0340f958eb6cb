"""Login everywhere, roles on every page and action."""

import pytest
from django.contrib.auth.models import Group
from django.urls import URLPattern, URLResolver, get_resolver

from alerts.models import AlertEvent, EventAudit

# Pages anyone may fetch: the health check and the login page itself.
PUBLIC = {"healthz", "login", "logout", "favicon"}  # favicon: a redirect to a static icon
SAMPLE = {"event_id": "1", "ip": "198.18.0.10", "run_id": "1", "rule_id": "1", "policy_id": "1"}


def dashboard_paths():
    out = []

    def walk(patterns, prefix=""):
        for p in patterns:
            if isinstance(p, URLResolver):
                if str(p.pattern).startswith(("admin/", "api/")):
                    continue  # the admin has its own login; the API answers 401/403
                walk(p.url_patterns, prefix + str(p.pattern))
            elif isinstance(p, URLPattern) and p.name not in PUBLIC:
                route = prefix + str(p.pattern)
                for key, value in SAMPLE.items():
                    for conv in ("int", "str"):
                        route = route.replace(f"<{conv}:{key}>", value)
                out.append("/" + route)

    walk(get_resolver().url_patterns)
    return out


def test_it_creates_the_three_role_groups(db):
    assert set(Group.objects.values_list("name", flat=True)) >= {"viewer", "triager", "admin"}


def test_it_sends_anonymous_visitors_to_the_login_page_from_every_page(client, world):
    paths = dashboard_paths()
    assert "/events/1/" in paths and "/metrics" in paths and "/" in paths
    for path in paths:
        response = client.get(path)
        if path == "/metrics":
            assert response.status_code == 401, path  # a scraper gets no login form
        else:
            assert response.status_code == 302, path
            assert response["Location"].startswith("/accounts/login/?next="), path
    assert client.get("/healthz").status_code == 200


def test_it_refuses_a_logged_in_user_without_a_role(login, users, world):
    client = login(users["nobody"])
    assert client.get("/events/").status_code == 403
    assert client.get("/").status_code == 403


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/events/",
        "/hosts/",
        "/runs/",
        "/rules/",
        "/networks/",
        "/policies/",
        "/hosts/198.18.0.10/",
    ],
)
def test_it_shows_every_read_page_to_a_viewer(login, users, world, path):
    assert login(users["viewer"]).get(path).status_code == 200


def test_it_forbids_a_viewer_to_change_an_event_state(login, users, world):
    event = world["ssh"]
    client = login(users["viewer"])
    response = client.post(f"/events/{event.pk}/transition/", {"to_state": "acknowledged"})
    assert response.status_code == 403
    response = client.post(
        "/events/bulk/", {"ids": [event.pk], "action": "ignore", "reason": "mine"}
    )
    assert response.status_code == 403
    assert AlertEvent.objects.get(pk=event.pk).state == "new"
    assert not EventAudit.objects.filter(event=event, actor__isnull=False).exists()


def test_it_keeps_rules_and_runs_for_admins(login, users, world):
    client = login(users["triager"])
    assert client.get("/rules/new/").status_code == 403
    assert client.post(f"/rules/{world['rule'].pk}/expire/").status_code == 403
    assert client.get("/audit/").status_code == 403
    assert login(users["admin"]).get("/audit/").status_code == 200


def test_it_protects_every_form_with_csrf(users, world):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(users["triager"])
    response = client.post(f"/events/{world['ssh'].pk}/transition/", {"to_state": "fixed"})
    assert response.status_code == 403
    assert AlertEvent.objects.get(pk=world["ssh"].pk).state == "new"
