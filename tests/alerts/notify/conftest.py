"""Real servers on loopback for notification tests: aiosmtpd for SMTP, http.server for webhooks."""

import hashlib
import hmac
import json
import logging
import socket
import threading
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller

NOW = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
SITE = "http://portmon.test"
WEBHOOK_SECRET = "s3cret-for-tests"

# aiosmtpd logs every SMTP command at INFO: too much noise in a failing test's output.
logging.getLogger("mail.log").setLevel(logging.WARNING)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Handler:
    def __init__(self, box: "SmtpServer"):
        self.box = box

    async def handle_DATA(self, server, session, envelope):
        if self.box.reply != "250":
            return self.box.reply
        self.box.received.append(
            (envelope.rcpt_tos, message_from_bytes(envelope.content, policy=policy.default))
        )
        return "250 Message accepted for delivery"


class SmtpServer:
    """aiosmtpd on 127.0.0.1; stop() closes the port, start() opens it again (same port)."""

    def __init__(self, port: int):
        self.port = port
        self.received: list[tuple[list[str], EmailMessage]] = []
        self.reply = "250"  # or e.g. "451 4.3.0 try later" to refuse at DATA
        self.controller: Controller | None = None

    def start(self) -> None:
        self.controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def to(self, address: str) -> list[EmailMessage]:
        return [m for rcpt, m in self.received if address in rcpt]


@pytest.fixture
def smtp(settings):
    server = SmtpServer(free_port())
    server.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = server.port
    settings.EMAIL_HOST_USER = ""
    settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_USE_SSL = False
    settings.EMAIL_TIMEOUT = 5
    settings.DEFAULT_FROM_EMAIL = "portmon@portmon.test"
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def notify_settings(settings):
    settings.SITE_URL = SITE
    settings.PORTMON_DIGEST_RECIPIENTS = ["sec-team@example.com"]
    settings.PORTMON_WEBHOOK_URL = ""
    settings.PORTMON_WEBHOOK_SECRET = ""
    settings.PORTMON_WEBHOOK_ALLOW_LOCAL = False
    settings.TIME_ZONE = "UTC"
    return settings


class WebhookServer:
    def __init__(self):
        self.requests: list[dict] = []
        self.status = 200
        box = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                expected = (
                    "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
                )
                box.requests.append(
                    {
                        "path": self.path,
                        "body": json.loads(body),
                        "signature_ok": hmac.compare_digest(
                            self.headers.get("X-Portmon-Signature", ""), expected
                        ),
                        "content_type": self.headers.get("Content-Type"),
                    }
                )
                self.send_response(box.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def webhook(settings):
    server = WebhookServer()
    settings.PORTMON_WEBHOOK_URL = server.url
    settings.PORTMON_WEBHOOK_SECRET = WEBHOOK_SECRET
    # The receiver listens on 127.0.0.1, which webhooks refuse unless told otherwise.
    settings.PORTMON_WEBHOOK_ALLOW_LOCAL = True
    try:
        yield server
    finally:
        server.close()


# --- data -------------------------------------------------------------------------------


@pytest.fixture
def world(db):
    """Two owned networks with one host each, plus a host outside any network."""
    from scanner.models import Host, Network

    net_a = Network.objects.create(cidr="198.18.1.0/24", owner_email="Alice@Example.com")
    net_b = Network.objects.create(cidr="198.18.2.0/24", owner_email="bob@example.com")
    return {
        "net_a": net_a,
        "net_b": net_b,
        "host_a": Host.objects.create(ip="198.18.1.5", network=net_a),
        "host_b": Host.objects.create(ip="198.18.2.7", network=net_b),
        "host_x": Host.objects.create(ip="198.19.9.1", network=None),
    }


def event_make(host, port: int, kind: str, *, at: datetime | None = None, **fields):
    from alerts.kinds import severity_for
    from alerts.models import AlertEvent

    # As events_raise does: the severity follows from the kind (a PoC's from its check).
    fields.setdefault("severity", severity_for(kind, fields.get("detail")))
    return AlertEvent.objects.create(
        host=host,
        proto=fields.pop("proto", "tcp"),
        port=port,
        kind=kind,
        created_at=at or NOW - timedelta(hours=2),
        **fields,
    )


def parts(message: EmailMessage) -> tuple[str, str]:
    """(text, html) bodies of a multipart/alternative email."""
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    return text, html
