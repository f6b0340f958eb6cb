"""The two ways out: SMTP (through Django's mail backend) and a signed JSON webhook.

Each returns normally only when the other side accepted the message; anything else raises.
"""

import hashlib
import hmac
import http.client
import ipaddress
import socket
import urllib.error
import urllib.request
from collections.abc import Iterable
from email.message import Message
from typing import IO, Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.core.mail.backends.base import BaseEmailBackend

SIGNATURE_HEADER = "X-Portmon-Signature"
# Errors that say the server is not reachable at all: the rest of a batch would fail too.
CONNECTION_ERRORS = (OSError,)


class WebhookError(Exception):
    """The webhook did not answer 2xx."""


def email_build(
    *,
    to: str,
    subject: str,
    text: str,
    html: str,
    message_id: str,
    connection: BaseEmailBackend | None = None,
) -> EmailMultiAlternatives:
    domain = settings.DEFAULT_FROM_EMAIL.rpartition("@")[2] or "localhost"
    email = EmailMultiAlternatives(
        subject=subject,
        body=text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[to],
        connection=connection,
        headers={
            # Stable per outbox row: a receiver can drop the duplicate of a retried send.
            "Message-ID": f"<{message_id}@{domain}>",
            "Auto-Submitted": "auto-generated",
        },
    )
    if html:
        email.attach_alternative(html, "text/html")
    return email


def email_send(email: EmailMultiAlternatives) -> None:
    """Hand one email to the backend; returns only when the server accepted it."""
    sent = email.send(fail_silently=False)
    if sent != 1:
        raise RuntimeError("the mail backend did not accept the message")


def signature(*, body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirect is not an acceptance: following it would turn the POST into a GET.
    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Message,
        newurl: str,
    ) -> None:
        return None


# Addresses a webhook never goes to unless PORTMON_WEBHOOK_ALLOW_LOCAL is set: this host's
# own services (Redis, the database, the admin), link-local (where cloud metadata answers)
# and the metadata addresses outside it. Private networks are fine: chat servers live there.
METADATA = {
    ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
    ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
}
ALLOW_LOCAL_HINT = "set PORTMON_WEBHOOK_ALLOW_LOCAL=1 to allow it"


def destination_refusal(address: str) -> str | None:
    """Why a webhook may not connect to address (an IP), or None when it may."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA:
        return "a cloud metadata address"
    if ip.is_loopback:
        return "a loopback address (this host's own services)"
    if ip.is_link_local:
        return "a link-local address (cloud metadata answers on 169.254.169.254)"
    if ip.is_unspecified or ip.is_multicast:
        return "not a host address"
    return None


def connect_checked(
    address: tuple[str, int],
    timeout: float | None = None,
    source_address: tuple[str, int] | None = None,
    socket_options: Iterable[tuple[int, int, int | bytes]] | None = None,
) -> socket.socket:
    """socket.create_connection, every resolved address checked before a packet is sent
    (the addresses checked are the ones connected to: no second lookup to rebind).

    timeout: seconds; anything else (None, http.client's "not given" sentinel) leaves the
    socket's default (socket.getdefaulttimeout()).

    Also what chat channels connect through (alerts.notify.chat), so one rule covers both.
    """
    host, port = address
    error: OSError | None = None
    for family, kind, proto, _name, sockaddr in socket.getaddrinfo(
        host, port, 0, socket.SOCK_STREAM
    ):
        address_text = str(sockaddr[0])  # an IP: only AF_INET/AF_INET6 give SOCK_STREAM
        refusal = destination_refusal(address_text)
        if refusal:
            raise WebhookError(f"host {host} is {address_text}, {refusal}; {ALLOW_LOCAL_HINT}")
        sock = socket.socket(family, kind, proto)
        try:
            for level, name, value in socket_options or ():
                sock.setsockopt(level, name, value)
            if isinstance(timeout, int | float):
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            error = exc
            sock.close()
    raise error or OSError(f"{host} resolves to no address")


def host_refusal(host: str) -> str | None:
    """Why a webhook or chat URL may not name `host` (an address, or a name resolving to
    one that destination_refusal refuses); None when it may, or when it does not resolve
    now (checked again, address by address, when connecting)."""
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        try:
            addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
        except (OSError, UnicodeError):
            return None
    else:
        addresses = {host}
    for address in sorted(addresses):
        refusal = destination_refusal(address)
        if refusal:
            return f"host {host} is {address}, {refusal}; {ALLOW_LOCAL_HINT}"
    return None


# http.client connects through self._create_connection, which its __init__ sets to
# socket.create_connection; these connect through connect_checked instead.
class _CheckedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = connect_checked


class _CheckedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = connect_checked


class _CheckedHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_CheckedHTTPConnection, req)


class _CheckedHTTPSHandler(urllib.request.HTTPSHandler):
    # build_opener makes this handler with no SSL context: the connection makes the
    # default one (certificates and host name verified).
    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_CheckedHTTPSConnection, req)


def webhook_post(
    *, url: str, body: bytes, secret: str, timeout: float, allow_local: bool = False
) -> int:
    """POST a JSON body, signed when a secret is set; returns the 2xx status or raises.

    allow_local: loopback, link-local and metadata destinations too (tests, a relay on
    this host); otherwise they are refused before any packet is sent.
    """
    if urlsplit(url).scheme not in ("http", "https"):
        raise WebhookError(f"webhook URL must be http(s): {url!r}")
    headers = {"Content-Type": "application/json", "User-Agent": "portmon-notify"}
    if secret:
        headers[SIGNATURE_HEADER] = signature(body=body, secret=secret)
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    checked = [] if allow_local else [_CheckedHTTPHandler, _CheckedHTTPSHandler]
    opener = urllib.request.build_opener(_NoRedirect, *checked)
    try:
        with opener.open(request, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        raise WebhookError(f"webhook answered HTTP {exc.code}") from None
    if not 200 <= status < 300:
        raise WebhookError(f"webhook answered HTTP {status}")
    return status
