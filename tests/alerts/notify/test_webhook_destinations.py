"""Webhooks never reach this host's own services, link-local or cloud metadata addresses
unless PORTMON_WEBHOOK_ALLOW_LOCAL says so: refused before a packet is sent, however the
address is spelt."""

import socket
from datetime import timedelta

import pytest

from alerts.notify.models import MessageState
from alerts.notify.services.delivery import messages_send_due
from alerts.notify.services.digest import digest_queue
from alerts.notify.transports import WebhookError, destination_refusal, webhook_post
from scanner.models import Network
from tests.alerts.notify.conftest import NOW


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1", "169.254.169.254", "169.254.1.1",
     "fe80::1", "fd00:ec2::254", "100.100.100.200", "0.0.0.0", "::", "224.0.0.1"],
)  # fmt: skip
def test_it_refuses_local_and_metadata_addresses(address):
    assert destination_refusal(address)


@pytest.mark.parametrize(
    "address", ["10.1.2.3", "192.168.0.10", "172.16.5.5", "198.18.0.1", "2001:db8::1", "fd12::1"]
)
def test_it_allows_private_and_public_addresses(address):
    assert destination_refusal(address) is None


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "2130706433", "0x7f.1", "127.1"]
)
def test_it_sends_nothing_to_this_host_however_it_is_spelt(host):
    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    port = server.getsockname()[1]
    try:
        with pytest.raises(WebhookError, match="PORTMON_WEBHOOK_ALLOW_LOCAL"):
            webhook_post(url=f"http://{host}:{port}/hook", body=b"{}", secret="", timeout=2)
        with pytest.raises(BlockingIOError):
            server.accept()  # no connection was even attempted
    finally:
        server.close()


@pytest.mark.django_db
def test_it_keeps_the_message_and_says_why_until_local_is_allowed(webhook, world, settings):
    settings.PORTMON_WEBHOOK_ALLOW_LOCAL = False
    settings.PORTMON_DIGEST_RECIPIENTS = []
    Network.objects.update(owner_email="")
    [message] = digest_queue(now=NOW)

    assert messages_send_due(now=NOW).retrying == 1
    message.refresh_from_db()
    assert message.state == MessageState.PENDING
    assert "loopback" in message.last_error
    assert "PORTMON_WEBHOOK_ALLOW_LOCAL" in message.last_error
    assert webhook.requests == []

    settings.PORTMON_WEBHOOK_ALLOW_LOCAL = True
    assert messages_send_due(now=NOW + timedelta(minutes=1)).sent == 1
    assert len(webhook.requests) == 1
