"""What the dashboard shows of agents: the processes on a host page (current, then gone),
the agents page with the cross-check of reports and scans; viewers only."""

from django.contrib.auth.models import Group, User

from scanner.models import Host, Port
from scanner.services.scope import network_add
from tests.agents.conftest import IP, sock


def viewer(client):
    user = User.objects.create_user("v", password="x")
    user.groups.add(Group.objects.get_or_create(name="viewer")[0])
    client.force_login(user)
    return client


def test_the_host_page_lists_the_processes_the_agent_reports_then_the_gone_ones(poster, client):
    assert (
        poster.send(sock(8080, pid=10, user="www"), sock(22, "sshd", "/usr/sbin/sshd")).status_code
        == 200
    )
    assert poster.send(sock(22, "sshd", "/usr/sbin/sshd")).status_code == 200  # nc went away
    client = viewer(client)

    slot = client.get(f"/hosts/{IP}/").context["slots"][0]
    assert slot["key"] == "processes" and slot["available"]
    assert [(r["port"], r["process"], r["exe"], r["state"]) for r in slot["rows"]] == [
        ("22/tcp", "sshd", "/usr/sbin/sshd", "listening"),
        ("8080/tcp", "nc", "/usr/bin/nc", "gone"),
    ]
    assert slot["rows"][1]["user"] == "www" and slot["rows"][1]["agent"] == "web1"
    page = client.get(f"/hosts/{IP}/").content.decode()
    assert "/usr/sbin/sshd" in page and "Not available yet" not in page.split("slot-poc")[0]


def test_the_host_page_escapes_what_an_agent_reports(poster, client):
    assert poster.send(sock(8080, name="<script>x</script>", exe="/tmp/<b>")).status_code == 200
    page = viewer(client).get(f"/hosts/{IP}/").content.decode()
    assert "<script>x</script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page


def test_the_agents_page_lists_agents_and_the_cross_check(poster, client):
    network = network_add(cidr="127.0.0.0/8", zone="internal")
    Host.objects.filter(ip=IP).update(network=network)
    unmanaged = Host.objects.create(ip="127.0.0.7", network=network)
    Port.objects.create(host=unmanaged, port=3306)
    Port.objects.create(host=Host.objects.get(ip=IP), port=9000, service="http")
    # On every address (0.0.0.0): reachable from the network, unlike a loopback socket.
    assert poster.send(sock(8080, address="0.0.0.0")).status_code == 200

    anonymous = client.get("/agents/")
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]
    page = viewer(client).get("/agents/").content.decode()
    assert "web1" in page and f'href="/hosts/{IP}/"' in page and "enabled" in page
    # 127.0.0.7 has open ports and no agent; 8080 is reported but never scanned open;
    # 9000 is scanned open but the agent does not list it.
    assert 'id="check-unmanaged"' in page and "127.0.0.7" in page
    assert 'id="check-unseen"' in page and "8080/tcp" in page
    assert 'id="check-unreported"' in page and "9000/tcp" in page
    nobody = User.objects.create_user("n", password="x")
    client.force_login(nobody)
    assert client.get("/agents/").status_code == 403
