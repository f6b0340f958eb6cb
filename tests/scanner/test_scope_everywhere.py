"""Scope is checked in one place for every writer (admin included) and again at plan and
worker time, whatever is stored; a garbage stored row is skipped, reported and removable."""

import ipaddress
import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from scanner import doctor, sweep
from scanner.models import Exclusion, Network, ScanPolicy, ScanRun, ScanShard
from scanner.scope import Scope
from scanner.services import publish, runs, shards
from scanner.targets import TargetError, guard, parse_targets

pytestmark = pytest.mark.django_db

FORBIDDEN_OR_GARBAGE = [
    ("169.254.169.254/32", "reserved range"),
    ("0.0.0.0/0", "reserved range"),
    ("not a cidr", "is not a CIDR"),
    ("198.18.0.1/24", "host bits set"),
    ("64:ff9b::/96", "NAT64"),
    ("-oN/tmp/x", "is not a CIDR"),
]
NOW = {"created_at_0": "2026-12-01", "created_at_1": "10:00:00"}


def network_form(cidr, *exclusions):
    data = {
        "cidr": cidr,
        "zone": "internal",
        "owner_email": "",
        "description": "",
        "baseline_scope": "network",
        **NOW,
        "exclusions-TOTAL_FORMS": str(len(exclusions)),
        "exclusions-INITIAL_FORMS": "0",
        "exclusions-MIN_NUM_FORMS": "0",
        "exclusions-MAX_NUM_FORMS": "1000",
    }
    for i, ex in enumerate(exclusions):
        data[f"exclusions-{i}-cidr"] = ex
        data[f"exclusions-{i}-reason"] = "r"
        data |= {f"exclusions-{i}-{k}": v for k, v in NOW.items()}
    return data


@pytest.mark.parametrize("cidr, message", FORBIDDEN_OR_GARBAGE)
def test_it_refuses_in_the_admin_what_the_cli_refuses(admin_client, cidr, message):
    page = admin_client.post("/admin/scanner/network/add/", network_form(cidr))

    assert page.status_code == 200  # the form again, with the error
    assert message in page.content.decode()
    assert not Network.objects.exists()
    with pytest.raises(CommandError, match=message):
        call_command("scope", "add", "--zone", "internal", "--", cidr)


def test_it_refuses_overlapping_networks_in_the_admin(admin_client):
    call_command("scope", "add", "198.18.0.0/16", "--zone", "internal")

    page = admin_client.post("/admin/scanner/network/add/", network_form("198.18.5.0/24"))

    assert "overlaps network 198.18.0.0/16" in page.content.decode()
    assert Network.objects.count() == 1


def test_it_normalises_what_the_admin_saves_as_the_cli_does(admin_client):
    page = admin_client.post("/admin/scanner/network/add/", network_form("::ffff:c612:0/120"))

    assert page.status_code == 302
    assert list(Network.objects.values_list("cidr", flat=True)) == ["198.18.0.0/24"]


@pytest.mark.parametrize(
    "exclusions, message",
    [
        (["198.19.0.0/24"], "is not inside network 198.18.0.0/16"),
        (["169.254.0.0/24"], "reserved range"),
        (["not a cidr"], "is not a CIDR"),
        (["198.18.1.0/24", "198.18.1.128/25"], "overlap"),
    ],
)
def test_it_checks_the_admins_inline_exclusions(admin_client, exclusions, message):
    page = admin_client.post(
        "/admin/scanner/network/add/", network_form("198.18.0.0/16", *exclusions)
    )

    assert message in page.content.decode()
    assert not Network.objects.exists() and not Exclusion.objects.exists()


def test_it_saves_a_good_network_with_its_exclusion_from_the_admin(admin_client):
    page = admin_client.post(
        "/admin/scanner/network/add/", network_form("198.18.0.0/16", "198.18.9.0/24")
    )

    assert page.status_code == 302
    assert Exclusion.objects.get().network.cidr == "198.18.0.0/16"


def test_it_checks_the_exclusion_admin_page_too(admin_client):
    net = Network.objects.create(cidr="198.18.0.0/16", zone="internal")

    page = admin_client.post(
        "/admin/scanner/exclusion/add/",
        {"network": net.pk, "cidr": "10.0.0.0/8", "reason": "", **NOW},
    )

    assert "is not inside network 198.18.0.0/16" in page.content.decode()
    assert not Exclusion.objects.exists()


def test_it_refuses_reserved_targets_in_the_guard_whatever_the_scope_says():
    # A scope built without any check (as rows stored before this rule would have been).
    trusting = Scope(
        networks=((ipaddress.ip_network("169.254.0.0/16"), "internal"),), exclusions=()
    )

    with pytest.raises(TargetError, match="reserved range 169.254.0.0/16"):
        guard(parse_targets("169.254.169.254"), trusting)


def test_it_grants_nothing_to_a_stored_forbidden_network():
    scope = Scope.from_cidrs({"0.0.0.0/0": "internal", "198.18.0.0/24": "internal"})

    with pytest.raises(TargetError, match="outside the configured scope.*1 invalid stored"):
        guard(parse_targets("10.1.2.3"), scope)
    assert guard(parse_targets("198.18.0.7"), scope).zones == {"internal"}


@pytest.fixture
def engine_calls(monkeypatch):
    from scanner.engines import connect

    calls = []
    monkeypatch.setattr(connect, "sweep", lambda options, events=None: calls.append(options) or [])
    monkeypatch.setattr(publish, "shards_publish", lambda **kw: None)
    return calls


def test_it_refuses_a_stored_forbidden_target_in_the_worker(engine_calls):
    # Rows written straight to the database: nothing checked them on the way in.
    Network.objects.create(cidr="169.254.0.0/16", zone="internal")
    run = ScanRun.objects.create(
        targets="169.254.169.254", ports="80", engine="connect", state="sweeping"
    )
    shard = ScanShard.objects.create(run=run, index=0, targets="169.254.169.254", ports="80")
    shard = shards.shard_claim(shard_id=shard.pk, worker="w", token="t")

    with pytest.raises(TargetError, match="reserved range"):
        sweep.shard_sweep(shard=shard)
    with pytest.raises(TargetError, match="reserved range"):
        runs.run_start(targets="169.254.169.254", ports="80", engine="connect")
    assert engine_calls == []


@pytest.fixture
def garbage():
    call_command("scope", "add", "127.0.0.0/8", "--zone", "internal")
    Network.objects.create(cidr="not a cidr", zone="internal")
    Exclusion.objects.create(network=Network.objects.get(cidr="127.0.0.0/8"), cidr="junk")


def test_it_skips_a_garbage_row_when_runs_start(admin_client, garbage, engine_calls, caplog):
    answer = admin_client.post(
        "/api/runs/",
        {"targets": "127.0.0.2", "ports": "22", "engine": "connect"},
        "application/json",
    )
    refused = admin_client.post(
        "/api/runs/", {"targets": "198.18.0.1", "ports": "22"}, "application/json"
    )

    assert answer.status_code == 201, answer.content
    assert refused.status_code == 400
    assert "1 invalid stored scope row(s) ignored" not in refused.json()["detail"]
    assert "2 invalid stored scope row(s) ignored" in refused.json()["detail"]
    assert "network 'not a cidr' ignored" in caplog.text
    shard = shards.shard_claim(
        shard_id=ScanShard.objects.get(run_id=answer.json()["id"]).pk, worker="w", token="t"
    )
    sweep.shard_sweep(shard=shard)
    probed = [str(a) for t in engine_calls[0].probe_targets() for a in ipaddress.ip_network(t)]
    assert probed == ["127.0.0.2"]


def test_it_starts_scheduled_runs_beside_a_garbage_row(garbage, engine_calls):
    policy = ScanPolicy.objects.create(name="p", targets="127.0.0.3", ports="22", engine="connect")

    assert runs.policy_run(policy_id=policy.pk) is not None


def test_it_reports_garbage_rows_in_doctor_and_removes_them_by_cli(garbage):
    out = StringIO()
    others = "broker,consumers,beat,tools,routes,smtp,clock,disk"
    call_command("doctor", "--json", "--warn-only", "--skip", others, stdout=out)
    checks = {c["name"]: c for c in json.loads(out.getvalue())}
    assert checks["scope network 'not a cidr'"]["status"] == doctor.FAIL
    assert checks["scope network 'not a cidr'"]["hint"] == (
        "python manage.py scope remove 'not a cidr'"
    )
    assert checks["scope exclusion 'junk'"]["status"] == doctor.FAIL

    call_command("scope", "remove", "not a cidr", stdout=StringIO())
    call_command("scope", "remove", "junk", stdout=StringIO())
    call_command("scope", "exclude", "127.0.0.9/32", stdout=StringIO())

    assert list(Network.objects.values_list("cidr", flat=True)) == ["127.0.0.0/8"]
    assert list(Exclusion.objects.values_list("cidr", flat=True)) == ["127.0.0.9/32"]
    (ok,) = doctor.check_scope(networks=["127.0.0.0/8"], exclusions=["127.0.0.9/32"])
    assert ok.status == doctor.OK
    with pytest.raises(CommandError, match="is not a CIDR"):
        call_command("scope", "remove", "not a cidr")
