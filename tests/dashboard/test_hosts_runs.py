"""Host page (ports, history, events, agent/PoC slots), run tree, policies, metrics."""

from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token

from scanner.models import ScanPolicy, ScanRun
from scanner.services import publish


def test_it_shows_a_host_with_its_ports_history_and_slots(login, users, world):
    response = login(users["viewer"]).get("/hosts/198.18.0.10/")
    page = response.content.decode()
    assert "OpenSSH" in page and "3306/tcp" in page
    assert [s["key"] for s in response.context["slots"]] == ["processes", "poc"]
    assert 'id="slot-processes"' in page and 'id="slot-poc"' in page
    assert login(users["viewer"]).get("/hosts/198.18.9.9/").status_code == 404
    assert login(users["viewer"]).get("/hosts/not-an-ip/").status_code == 404


def test_it_draws_a_run_as_a_tree_of_shards_with_their_states(login, users, world):
    page = login(users["viewer"]).get(f"/runs/{world['run'].pk}/").content.decode()
    assert 'class="st-done">shard 0: done' in page
    assert 'class="st-failed">shard 1: failed' in page and "killed" in page
    assert login(users["viewer"]).get("/runs/424242/").status_code == 404


def test_it_refreshes_the_run_pages_only_while_a_run_is_moving(login, users, world):
    client = login(users["viewer"])
    refresh = '<meta http-equiv="refresh" content="5">'
    run = world["run"]
    assert refresh not in client.get("/runs/").content.decode()
    assert refresh not in client.get(f"/runs/{run.pk}/").content.decode()
    ScanRun.objects.filter(pk=run.pk).update(state="sweeping")
    assert refresh in client.get("/runs/").content.decode()
    assert refresh in client.get(f"/runs/{run.pk}/").content.decode()


def test_it_lets_an_admin_start_a_policy_run_now(login, users, world, monkeypatch):
    queued = []
    monkeypatch.setattr(publish, "shards_publish", lambda **kw: queued.append(kw))
    policy = ScanPolicy.objects.create(name="lab", targets="198.18.0.0/28", ports="22")
    response = login(users["admin"]).post(f"/policies/{policy.pk}/run/")
    run = ScanRun.objects.get(policy=policy)
    assert response["Location"] == f"/runs/{run.pk}/"
    # A second press while it runs says why nothing started.
    page = login(users["admin"]).post(f"/policies/{policy.pk}/run/", follow=True)
    assert "already has a run in progress" in page.content.decode()
    assert ScanRun.objects.filter(policy=policy).count() == 1
    assert login(users["triager"]).post(f"/policies/{policy.pk}/run/").status_code == 403


def test_it_serves_metrics_to_a_token_and_not_to_strangers(client, users, world):
    token = Token.objects.create(user=users["viewer"])
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer nope").status_code == 401
    nobody = Token.objects.create(user=User.objects.get(username="nobody"))
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {nobody.key}").status_code == 403
    text = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token.key}").content.decode()
    assert 'portmon_events{kind="high_risk",state="new"} 1.0' in text
    assert 'portmon_shards{state="failed"} 1.0' in text
    assert 'portmon_shard_attempts{state="failed"} 3.0' in text
    assert "portmon_outbox_pending 0.0" in text
    assert 'portmon_runs{state="finished"} 1.0' in text
