"""Events filtered by protocol: 161/udp and 161/tcp are two ports, on the page, CSV and API."""

from alerts.models import AlertEvent
from scanner.models import Host
from tests.dashboard.conftest import event, login, users  # noqa: F401


def test_it_filters_events_by_proto_on_the_page_the_csv_and_the_api(db, client, users):  # noqa: F811
    host = Host.objects.create(ip="198.18.0.10")
    tcp = event(host, 161, "new_port")
    udp = event(host, 162, "high_risk")
    AlertEvent.objects.filter(pk=udp.pk).update(proto="udp", port=161, open_key=None)
    client.force_login(users["viewer"])

    page = client.get("/events/", {"proto": "udp"}).content.decode()
    assert "161/udp" in page and "161/tcp" not in page
    csv = b"".join(client.get("/events/export.csv", {"proto": "udp"}).streaming_content)
    lines = csv.decode().strip().splitlines()
    assert len(lines) == 2 and ",udp,161," in lines[1]
    api = client.get("/api/events/", {"proto": "udp"}).json()
    rows = api["results"] if isinstance(api, dict) else api
    assert [(r["id"], r["proto"]) for r in rows] == [(udp.pk, "udp")]
    api = client.get("/api/events/", {"proto": "tcp"}).json()
    rows = api["results"] if isinstance(api, dict) else api
    assert [r["id"] for r in rows] == [tcp.pk]
    # Adversarial: an unknown protocol is an error, not "everything".
    assert client.get("/api/events/", {"proto": "icmp"}).status_code == 400
