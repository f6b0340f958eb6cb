"""UDP end to end in the namespace lab, routed (masscan) and on-link (the UDP prober),
0.5% loss: every answering UDP service found and named in repeated runs, nothing silent
or closed ever listed; a new SNMP-public service raises high_risk and a poc_finding that
reach the digest and the API.

In this process (`scan --local`): the sweep, nmap -sU -sV, the diff and the PoC chain run
eagerly, as a worker would run them.
"""

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from alerts.models import AlertEvent, HighRiskPort
from scanner.models import PortObservation
from tests.lab import Lab

RUNS = 5


def scan_udp(hosts: list[str]) -> list[dict]:
    out = StringIO()
    call_command(
        "scan", *hosts, "--ports", "", "--udp-ports", "default", "--local", "--json",
        "--rate", "2000", stdout=out,
    )  # fmt: skip
    return json.loads(out.getvalue())


@pytest.mark.lab
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("on_link", [False, True], ids=["routed", "on-link"])
def test_it_finds_and_names_every_udp_service_and_never_a_silent_port(
    on_link,
    settings,
    client,
):
    settings.PORTMON_NMAP_PORT_TIMEOUT = 30
    settings.PORTMON_POC_CHECK_TIMEOUT = 3
    # Migration data that an earlier transactional test's flush removed: stated here.
    for port in (161, 11211, 123, 53, 1900):
        HighRiskPort.objects.get_or_create(proto="udp", port=port)
    with Lab(
        hosts=6, ports_per_host=(0, 0), loss=0.005, seed=5, udp_hosts=5, on_link=on_link
    ) as lab:
        call_command("scope", "add", lab.cidr, "--zone", "internal")
        truth = lab.udp_open_ports
        never = (
            lab.udp_silent
            | {(ip, port) for ip in lab.hosts for port in (69, 111, 500, 5060, 5353, 11211)} - truth
        )
        for n in range(RUNS):
            rows = scan_udp(lab.hosts)
            found = {(r["ip"], r["port"]) for r in rows}
            assert {r["proto"] for r in rows} == {"udp"}
            assert found == truth, (
                f"run {n + 1}: missed {sorted(truth - found)}, false {sorted(found - truth)}"
            )
            assert not found & never
            unnamed = [(r["ip"], r["port"]) for r in rows if not r["service"]]
            assert not unnamed, f"run {n + 1}: UDP ports nmap -sU -sV did not name: {unnamed}"
        names = {(r["ip"], r["port"]): r["service"] for r in rows}
        assert {names[k] for k in truth if k[1] == 161} == {"snmp"}

        # A new SNMP service with community public appears on a host that had none.
        host = next(ip for ip in lab.hosts if (ip, 161) not in truth)
        lab.udp_open_port(host, 161, "snmp")
        rows = scan_udp(lab.hosts)
        assert (host, 161) in {(r["ip"], r["port"]) for r in rows}
        assert sum(lab.egress_drops().values()) == 0

    events = AlertEvent.objects.filter(host__ip=host, proto="udp", port=161)
    kinds = set(events.values_list("kind", flat=True))
    assert {"high_risk", "poc_finding"} <= kinds, kinds
    finding = events.get(kind="poc_finding")
    assert "community public" in json.dumps(finding.detail)

    from alerts.notify.services.digest import digest_prepare, digest_render

    digest = digest_prepare(
        recipient="team@example.com",
        network_ids=None,
        channel="email",
        now=timezone.now() + timedelta(seconds=1),
    )
    _subject, text, html = digest_render(digest=digest)
    assert f"{host}" in text and "161/udp" in text
    assert "snmp_public" in text or "SNMP answers the community string" in text

    from tests.dashboard.conftest import make_user

    client.force_login(make_user("viewer", "viewer"))
    api = client.get("/api/events/", {"host": host}).json()
    results = api["results"] if isinstance(api, dict) else api
    mine = [e for e in results if e["port"] == 161 and e["proto"] == "udp"]
    assert {"high_risk", "poc_finding"} <= {e["kind"] for e in mine}
    # Silent and closed UDP ports were never recorded by any run.
    assert not PortObservation.objects.filter(proto="udp", port__in=[69, 111, 500]).exists()
