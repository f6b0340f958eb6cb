"""The digest lists a run's events by address as a reader counts: numerically, IPv4 first."""

import re

import pytest

from alerts.notify.services.delivery import messages_send_due
from alerts.notify.services.digest import digest_queue
from scanner.models import Host
from tests.alerts.notify.conftest import NOW, event_make, parts

pytestmark = pytest.mark.django_db


def test_it_orders_addresses_numerically_in_both_parts(smtp, world):
    # One run's events share created_at, so the address decides the order. As strings,
    # "100::7" < "198.18.1.10" < "198.18.1.100" < "198.18.1.5" < "198.18.1.9".
    net = world["net_a"]
    for ip in ("198.18.1.100", "100::7", "198.18.1.9", "198.18.1.10"):
        Host.objects.create(ip=ip, network=None if ":" in ip else net)
    for host in Host.objects.exclude(ip__in=["198.18.2.7", "198.19.9.1"]).order_by("?"):
        event_make(host, 8080, "new_port")

    digest_queue(now=NOW)
    messages_send_due(now=NOW)

    text, html = parts(smtp.to("sec-team@example.com")[0])
    expected = [
        "198.18.1.5:8080/tcp",
        "198.18.1.9:8080/tcp",
        "198.18.1.10:8080/tcp",
        "198.18.1.100:8080/tcp",
        "[100::7]:8080/tcp",
    ]
    assert re.findall(r"^- \[medium\] (\S+)  new port", text, re.MULTILINE) == expected
    assert re.findall(r'<a href="[^"]+">([^<]+)</a>', html)[: len(expected)] == expected
