"""The two ways out: SMTP (through Django's mail backend) and a signed JSON webhook.

Each returns normally only when the other side accepted the message; anything else raises.
"""

import hashlib
import hmac
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import EmailMultiAlternatives

SIGNATURE_HEADER = "X-Portmon-Signature"
# Errors that say the server is not reachable at all: the rest of a batch would fail too.
CONNECTION_ERRORS = (OSError,)


class WebhookError(Exception):
    """The webhook did not answer 2xx."""


def email_build(
    *, to: str, subject: str, text: str, html: str, message_id: str, connection=None
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
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def webhook_post(*, url: str, body: bytes, secret: str, timeout: float) -> int:
    """POST a JSON body, signed when a secret is set; returns the 2xx status or raises."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise WebhookError(f"webhook URL must be http(s): {url!r}")
    headers = {"Content-Type": "application/json", "User-Agent": "portmon-notify"}
    if secret:
        headers[SIGNATURE_HEADER] = signature(body=body, secret=secret)
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        raise WebhookError(f"webhook answered HTTP {exc.code}") from None
    if not 200 <= status < 300:
        raise WebhookError(f"webhook answered HTTP {status}")
    return status
