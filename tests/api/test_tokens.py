"""API tokens are stored hashed and shown once, expire, and stop working when revoked;
DRF's plaintext tokens are moved into hashed rows by a migration and keep working."""

import importlib
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.utils import timezone
from rest_framework.authtoken.models import Token

from accounts.models import ApiToken
from accounts.services import api_token_issue
from audit.models import AuditEntry


def get(client, token, path="/api/hosts/"):
    return client.get(path, HTTP_AUTHORIZATION=f"Token {token}")


def create(*args) -> str:
    out, err = StringIO(), StringIO()
    call_command("api_token", "create", *args, stdout=out, stderr=err)
    assert "it is not stored" in err.getvalue()
    return out.getvalue().strip()


def test_it_shows_a_token_once_and_stores_only_its_hash(client, users):
    token = create("viewer", "--name", "grafana")

    row = ApiToken.objects.get()
    key_id, secret = token.split(".")
    assert row.key_id == key_id and secret not in row.token_hash and row.token_hash != token
    stored = " ".join(str(v) for v in ApiToken.objects.values_list().get())
    assert secret not in stored
    assert not Token.objects.exists()
    assert get(client, token).status_code == 200
    assert (row.expires_at - timezone.now()).days in (364, 365)
    listing = StringIO()
    call_command("api_token", "list", stdout=listing)
    assert key_id in listing.getvalue() and secret not in listing.getvalue()


def test_it_refuses_an_expired_token_and_says_so(client, users):
    token = create("viewer", "--days", "1")
    assert get(client, token).status_code == 200

    ApiToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    answer = get(client, token)

    assert answer.status_code == 401 and "expired" in answer.json()["detail"]
    assert ApiToken.objects.get().expires_at is not None
    forever = create("viewer", "--days", "0")
    assert ApiToken.objects.get(key_id=forever.split(".")[0]).expires_at is None


def test_it_stops_a_revoked_token_at_once_and_audits_both(client, users):
    token = create("admin")
    key_id = token.split(".")[0]
    call_command("api_token", "revoke", key_id, stdout=StringIO())

    assert get(client, token).status_code == 401
    assert get(client, token, "/metrics").status_code == 401
    actions = list(AuditEntry.objects.order_by("id").values_list("action", flat=True))
    assert actions[-2:] == ["apitoken.issue", "apitoken.revoke"]
    assert not any("token_hash" in str(e.after) for e in AuditEntry.objects.all())
    with pytest.raises(CommandError, match="revoked already"):
        call_command("api_token", "revoke", key_id)


def test_it_revokes_and_reissues_from_the_admin(client, users):
    users["admin"].is_staff = users["admin"].is_superuser = True
    users["admin"].save()
    old = api_token_issue(user=users["viewer"], name="ci")
    client.force_login(users["admin"])
    url = "/admin/accounts/apitoken/"

    page = client.post(
        url, {"action": "reissue_tokens", "_selected_action": [old.token_id]}, follow=True
    )
    client.post(url, {"action": "revoke_tokens", "_selected_action": [old.token_id]})
    client.logout()

    new = page.content.decode().split("it is not stored): ")[1].split("<")[0]
    assert get(client, old.token).status_code == 401
    assert get(client, new).status_code == 200
    assert client.get("/admin/authtoken/tokenproxy/").status_code in (302, 404)


def test_it_moves_plaintext_tokens_into_hashed_rows(client, users):
    legacy = Token.objects.create(user=users["viewer"]).key
    migration = importlib.import_module("api.migrations.0002_hash_drf_tokens")
    # The models as that migration sees them (ApiToken was in the api app then).
    state = MigrationLoader(connection).project_state(("api", "0002_hash_drf_tokens"))

    migration.hash_tokens(state.apps, None)

    assert not Token.objects.exists()
    row = ApiToken.objects.get()
    assert legacy not in row.token_hash and row.key_id == f"legacy-{legacy[:16]}"
    assert get(client, legacy).status_code == 200
    assert get(client, legacy[:-1] + ("0" if legacy[-1] != "0" else "1")).status_code == 401


@pytest.mark.parametrize(
    "forged",
    ["", ".", "x.", ".x", "{key_id}.", "{key_id}.wrong", "{key_id}", "{key_id}.{secret}x",
     "{key_id}..{secret}", "a" * 40, "legacy-" + "a" * 16, "{key_id}.{secret}" + "." * 300],
)  # fmt: skip
def test_it_refuses_forged_tokens_with_401(client, users, settings, forged):
    settings.AXES_FAILURE_LIMIT = 100
    key_id, secret = api_token_issue(user=users["viewer"]).token.split(".")

    answer = get(client, forged.format(key_id=key_id, secret=secret))

    assert answer.status_code == 401
