"""Agents vs scans: unmanaged hosts, sockets scans never see, ports the agent cannot see."""

import pytest
from django.utils import timezone

from agents.selectors import cross_check
from agents.services.enrollment import agent_add
from alerts.notify.services.digest import digest_prepare, digest_render
from scanner.models import Host, Network, Port
from tests.agents.conftest import Poster

# Database rows only: nothing here opens a connection to these addresses.
MANAGED, UNMANAGED, ELSEWHERE = "198.18.0.20", "198.18.0.21", "198.18.1.5"


@pytest.fixture
def world(db, client):
    net = Network.objects.create(cidr="198.18.0.0/24", zone="internal")
    other = Network.objects.create(cidr="198.18.1.0/24", zone="internal")
    token = agent_add(name="app1", ips=[MANAGED]).token
    for ip, network, ports in (
        (MANAGED, net, [22, 9000]),
        (UNMANAGED, net, [80, 443]),
        (ELSEWHERE, other, [25]),
    ):
        host, _ = Host.objects.update_or_create(ip=ip, defaults={"network": network})
        for port in ports:
            Port.objects.create(host=host, port=port, service="http" if port == 9000 else "")
    poster = Poster(client, token)
    sshd = {"proto": "tcp", "port": 22, "name": "sshd", "exe": "/usr/sbin/sshd"}
    response = poster.send(
        {**sshd, "address": "0.0.0.0"},
        {**sshd, "port": 8443, "name": "java", "exe": "/usr/bin/java", "address": MANAGED},
        {**sshd, "port": 6379, "name": "redis-server", "exe": "", "address": "127.0.0.1"},
    )
    assert response.status_code == 200
    return net


def lines(groups) -> dict[str, list[tuple]]:
    return {g.key: [(line.ip, line.port, line.text) for line in g.lines] for g in groups}


def test_it_finds_unmanaged_hosts_unseen_sockets_and_ports_the_agent_cannot_see(world):
    assert lines(cross_check()) == {
        "unmanaged": [(UNMANAGED, None, "2 open port(s)"), (ELSEWHERE, None, "1 open port(s)")],
        # 8443 is on the network but scans never see it; redis on loopback is no finding.
        "unseen": [(MANAGED, 8443, "java (/usr/bin/java)")],
        "unreported": [(MANAGED, 9000, "http")],
    }


def test_it_limits_the_cross_check_to_a_recipients_networks(world):
    assert lines(cross_check(network_ids=frozenset({world.pk})))["unmanaged"] == [
        (UNMANAGED, None, "2 open port(s)")
    ]


def test_it_shows_the_cross_check_in_both_parts_of_the_digest(world):
    digest = digest_prepare(
        recipient="secops@example.com", network_ids=None, channel="email", now=timezone.now()
    )
    _, text, html = digest_render(digest=digest)

    for part in (text, html):
        assert "Host agents vs scans" in part
        assert "Hosts with open ports and no agent (2)" in part
        assert f"{MANAGED}:8443/tcp" in part and f"{MANAGED}:9000/tcp" in part


def test_a_udp_socket_is_unseen_only_where_a_udp_scan_looked(db, client):
    """An agent's UDP sockets (a resolver's client port, a silent service) are no finding
    until a UDP scan covered that port; then one the scan did not see open is listed."""
    from datetime import timedelta

    from scanner.models import CoverageSpan

    net = Network.objects.create(cidr="198.18.2.0/24", zone="internal")
    ip = "198.18.2.20"
    token = agent_add(name="dns1", ips=[ip]).token
    Host.objects.update_or_create(ip=ip, defaults={"network": net})
    udp = {"proto": "udp", "name": "named", "exe": "/usr/sbin/named", "address": ip}
    assert (
        Poster(client, token).send({**udp, "port": 53}, {**udp, "port": 40000}).status_code == 200
    )
    # A TCP span over every port says nothing about UDP.
    at = timezone.now() - timedelta(days=1)
    everything = "3323068928-3323069183"  # 198.18.2.0/24 as integers
    CoverageSpan.objects.create(network=net, at=at, addresses=everything, ports="1-65535")
    assert "unseen" not in lines(cross_check())
    CoverageSpan.objects.create(network=net, at=at, addresses=everything, ports="53", proto="udp")
    assert lines(cross_check())["unseen"] == [(ip, 53, "named (/usr/sbin/named)")]
