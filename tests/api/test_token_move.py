"""API tokens moved from the api app to accounts (migrations api 0003, accounts 0002): a
token issued before the move still authenticates after it, and a group granted permissions
on tokens keeps them. Run with Django's migration executor on the test database."""

import pytest
from django.contrib.auth.models import Group, User
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from accounts.models import ApiToken
from accounts.services import token_hash
from audit.models import AuditEntry

BEFORE = [("api", "0002_hash_drf_tokens"), ("accounts", "0001_visit")]


def migrate(targets) -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    return MigrationExecutor(connection)  # a new one reads what is applied now


def latest() -> list[tuple[str, str]]:
    return MigrationExecutor(connection).loader.graph.leaf_nodes()


# Transactional: migrations on SQLite cannot run inside the test's transaction.
@pytest.mark.django_db(transaction=True)
def test_a_token_and_group_permissions_from_before_the_move_work_after_it(client):
    leaves = latest()
    try:
        old = migrate(BEFORE).loader.project_state(BEFORE).apps
        # An install from before the move: a token, a group with the token permissions.
        old_type = old.get_model("contenttypes", "ContentType").objects.get(
            app_label="api", model="apitoken"
        )
        view = old.get_model("auth", "Permission").objects.get(
            content_type=old_type, codename="view_apitoken"
        )
        owner = User.objects.create_user("grafana")
        owner.groups.add(Group.objects.get_or_create(name="viewer")[0])
        old.get_model("api", "ApiToken").objects.create(
            user_id=owner.pk, name="dashboards", key_id="k1", token_hash=token_hash("s1")
        )
        auditor = User.objects.create_user("auditor", is_staff=True)
        group = Group.objects.create(name="token auditors")
        group.permissions.add(view.pk)
        auditor.groups.add(group)
        AuditEntry.objects.create(
            action="apitoken.issue", object_type="api.apitoken", object_id="1"
        )
    finally:
        migrate(leaves)

    answer = client.get("/api/hosts/", HTTP_AUTHORIZATION="Token k1.s1")
    assert answer.status_code == 200
    assert ApiToken.objects.get().last_used_at is not None  # found through accounts

    ContentType.objects.clear_cache()
    assert ContentType.objects.get_for_model(ApiToken).pk == old_type.pk
    assert not ContentType.objects.filter(app_label="api").exists()
    auditor = User.objects.get(username="auditor")
    assert auditor.has_perm("accounts.view_apitoken")
    client.force_login(auditor)
    listing = client.get("/admin/accounts/apitoken/")
    assert listing.status_code == 200 and "dashboards" in listing.content.decode()
    assert AuditEntry.objects.get().object_type == "accounts.apitoken"


@pytest.mark.django_db(transaction=True)
def test_the_move_can_be_rolled_back_and_done_again():
    leaves = latest()
    ContentType.objects.get_for_model(ApiToken)  # as the migrate command's post_migrate made
    try:
        old = migrate(BEFORE).loader.project_state(BEFORE).apps
        types = old.get_model("contenttypes", "ContentType").objects
        assert types.filter(app_label="api", model="apitoken").exists()
        assert not types.filter(app_label="accounts", model="apitoken").exists()
    finally:
        migrate(leaves)
    ContentType.objects.clear_cache()
    assert ContentType.objects.get_for_model(ApiToken).app_label == "accounts"
