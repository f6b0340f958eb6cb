"""Guessing is throttled: a (user, address) pair is locked out after N failed logins, bad API
tokens lock out their address, an admin unlocks either; each lockout is in the audit log."""

import pytest
from axes.models import AccessAttempt
from django.core.management import call_command

from accounts.services import api_token_issue
from audit.models import AuditEntry
from tests.dashboard.conftest import PASSWORD

LOGIN = "/accounts/login/"
ATTACKER, COLLEAGUE = "192.0.2.66", "192.0.2.10"


@pytest.fixture(autouse=True)
def limit(settings):
    settings.AXES_FAILURE_LIMIT = 5


def login(client, password, *, user="viewer", address=ATTACKER):
    client.logout()
    client.post(LOGIN, {"username": user, "password": password}, REMOTE_ADDR=address)
    return client.get("/", REMOTE_ADDR=address).status_code == 200


def test_it_locks_out_a_user_from_one_address_after_five_failures(client, users):
    for _ in range(4):
        assert not login(client, "wrong")
    assert login(client, PASSWORD)  # a good login before the limit resets the count

    for _ in range(5):
        login(client, "wrong")
    refused = client.post(LOGIN, {"username": "viewer", "password": PASSWORD}, REMOTE_ADDR=ATTACKER)

    assert refused.status_code == 429
    assert not login(client, PASSWORD)
    assert login(client, PASSWORD, address=COLLEAGUE)  # the same user elsewhere
    assert login(client, PASSWORD, user="admin")  # another user from that address
    (entry,) = AuditEntry.objects.filter(action="login.locked_out")
    assert entry.object_repr == f"viewer from {ATTACKER}"
    assert entry.object_id == str(users["viewer"].pk)


def test_it_unlocks_with_axes_reset_and_audits_it(client, users):
    for _ in range(30):  # an attacker who keeps going: one audit row, still locked
        login(client, "wrong")
    assert AuditEntry.objects.filter(action="login.locked_out").count() == 1
    assert not login(client, PASSWORD)

    call_command("axes_reset")

    assert login(client, PASSWORD)
    cleared = AuditEntry.objects.get(action="login.lockout_cleared")
    assert cleared.after["username"] == "viewer" and cleared.actor is None


def test_it_unlocks_from_the_admin_as_the_admin(client, users):
    for _ in range(5):
        login(client, "wrong")
    attempt = AccessAttempt.objects.get(username="viewer")
    admin = client
    admin.force_login(users["admin"])
    users["admin"].is_staff = users["admin"].is_superuser = True
    users["admin"].save()

    page = admin.post(
        "/admin/axes/accessattempt/",
        {"action": "delete_selected", "_selected_action": [attempt.pk], "post": "yes"},
        REMOTE_ADDR=COLLEAGUE,
    )

    assert page.status_code == 302 and not AccessAttempt.objects.exists()
    assert AuditEntry.objects.get(action="login.lockout_cleared").actor == users["admin"]
    assert login(client, PASSWORD)


def test_it_locks_out_an_address_that_guesses_api_tokens(client, users):
    good = api_token_issue(user=users["viewer"]).token

    def api(key, address=ATTACKER, path="/api/hosts/", scheme="Token"):
        return client.get(path, HTTP_AUTHORIZATION=f"{scheme} {key}", REMOTE_ADDR=address)

    assert api(good).status_code == 200
    assert [api(f"guess{i}").status_code for i in range(5)] == [401, 401, 401, 401, 429]

    assert api(good).status_code == 429
    assert api(good, path="/metrics", scheme="Bearer").status_code == 429
    assert api(good, address=COLLEAGUE).status_code == 200
    assert AuditEntry.objects.filter(action="login.locked_out").count() == 1
    call_command("axes_reset_ip", ATTACKER)
    assert api(good).status_code == 200


@pytest.mark.parametrize("junk", ["x", "'; DROP TABLE x", " extra", "\t2"])
def test_it_refuses_a_token_with_trailing_junk_on_the_api_and_metrics(client, users, junk):
    good = api_token_issue(user=users["viewer"]).token

    for scheme, path in [("Token", "/api/hosts/"), ("Bearer", "/metrics"), ("Token", "/metrics")]:
        answer = client.get(path, HTTP_AUTHORIZATION=f"{scheme} {good}{junk}")
        assert answer.status_code == 401, (scheme, path)
        assert client.get(path, HTTP_AUTHORIZATION=f"{scheme} {good}").status_code == 200
