"""Host page (ports, history, events, agent/PoC slots), run tree, policies, metrics."""

import csv

from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.services import api_token_issue
from scanner import selectors
from scanner.models import Host, Port, ScanPolicy, ScanRun
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
    token = api_token_issue(user=users["viewer"]).token
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer nope").status_code == 401
    nobody = api_token_issue(user=User.objects.get(username="nobody")).token
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {nobody}").status_code == 403
    text = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}").content.decode()
    assert 'portmon_events{kind="high_risk",state="new"} 1.0' in text
    assert 'portmon_shards{state="failed"} 1.0' in text
    assert 'portmon_shard_attempts{state="failed"} 3.0' in text
    assert "portmon_outbox_pending 0.0" in text
    assert 'portmon_runs{state="finished"} 1.0' in text


def csv_lines(response) -> list[list[str]]:
    return list(csv.reader(b"".join(response.streaming_content).decode().splitlines()))


def test_it_exports_ports_as_csv_in_address_order_with_banners_as_text(login, users, world):
    # Text order would put .100 before .9, and IPv6 anywhere; a banner is attacker text.
    for ip in ("198.18.0.100", "198.18.0.9", "2001:db8::1"):
        host = Host.objects.create(ip=ip, network=world["net"])
        Port.objects.create(host=host, port=443, product='=HYPERLINK("http://x","y")')
        Port.objects.create(host=host, port=25, state="closed")
    client = login(users["viewer"])

    lines = csv_lines(client.get("/ports/export.csv"))
    assert lines[0][:4] == ["ip", "proto", "port", "state"]
    assert [(row[0], row[2]) for row in lines[1:]] == [
        ("198.18.0.9", "443"), ("198.18.0.10", "22"), ("198.18.0.10", "3306"),
        ("198.18.0.100", "443"), ("198.18.1.20", "8080"), ("2001:db8::1", "443"),
    ]  # fmt: skip
    assert lines[1][5] == '\'=HYPERLINK("http://x","y")'
    closed = csv_lines(client.get("/ports/export.csv?state=closed"))
    assert [row[0] for row in closed[1:]] == ["198.18.0.9", "198.18.0.100", "2001:db8::1"]
    assert len(csv_lines(client.get("/ports/export.csv?state=all"))) == 1 + 6 + 3
    bad = client.get("/ports/export.csv?state=opne")
    assert bad.status_code == 400 and b"open, closed or all" in bad.content
    assert client.get("/ports/export.csv").status_code == 200
    assert login(User.objects.get(username="nobody")).get("/ports/export.csv").status_code == 403


def test_the_ports_csv_reads_hosts_in_batches_and_keeps_every_row(login, users, world):
    ips = [f"198.18.{2 + i // 250}.{i % 250 + 1}" for i in range(600)]
    Host.objects.bulk_create([Host(ip=ip, network=world["net"]) for ip in reversed(ips)])
    hosts = Host.objects.filter(ip__in=ips)
    Port.objects.bulk_create([Port(host=h, port=p) for h in hosts for p in (80, 22)])
    with CaptureQueriesContext(connection) as queries:
        lines = csv_lines(login(users["viewer"]).get("/ports/export.csv"))
    assert len(lines) == 1 + 3 + 600 * 2
    expected = [(ip, port) for ip in ips for port in ("22", "80")]
    assert [(row[0], row[2]) for row in lines[1:] if row[0] in set(ips)] == expected
    # Two queries for 602 hosts (CSV_HOSTS 500 each), not one per host nor one for all.
    port_queries = [q for q in queries if "scanner_port" in q["sql"]]
    assert len(port_queries) == 2 == -(-602 // selectors.CSV_HOSTS)
