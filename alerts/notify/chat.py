"""Chat channels through Apprise: Slack, Microsoft Teams (Workflows), DingTalk, WeCom,
Feishu/Lark, Discord, Mattermost, Telegram and plain JSON/form/XML endpoints.

Like transports: chat_send returns normally only when the service accepted the message,
and raises ChatError otherwise. A channel URL carries the service's token, so it is never
shown or logged in full: chat_url_check gives a masked form, and everything Apprise logs
or reports while Portmon uses a URL is scrubbed of that URL's secret parts.
"""

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

import apprise
import urllib3.util.connection
from apprise import NotifyBase

# urllib3's own types and "no timeout given" sentinel (urllib3 is pinned).
from urllib3.util.connection import _TYPE_SOCKET_OPTIONS
from urllib3.util.timeout import _DEFAULT_TIMEOUT, _TYPE_TIMEOUT

from alerts.notify.transports import WebhookError, connect_checked, host_refusal

# Services a channel may use (Apprise schemes). Apprise knows a hundred more; some write
# files, run local commands or send email through another path, so only chat services and
# plain HTTP endpoints are allowed here.
ALLOWED_SCHEMES = frozenset(
    {
        "slack",
        "workflow",  # Microsoft Teams (Power Automate / Workflows)
        "workflows",
        "dingtalk",
        "wecombot",
        "feishu",
        "lark",
        "discord",
        "mmost",
        "mmosts",
        "tgram",
        "json",
        "jsons",
        "form",
        "forms",
        "xml",
        "xmls",
    }
)
# Schemes whose URL names the server to connect to (the others name a token and talk to
# their service's own host): that host is checked when the channel is saved.
CUSTOM_HOST_SCHEMES = frozenset(
    {"workflow", "workflows", "mmost", "mmosts", "json", "jsons", "form", "forms", "xml", "xmls"}
)
EXAMPLES = "e.g. slack://TokenA/TokenB/TokenC, dingtalk://token/, json://host/path"
# Secret parts shorter than this are not scrubbed from messages: they would blank out
# ordinary words ("http", port numbers) and a token that short is no secret anyway.
MIN_SECRET = 4

logger = logging.getLogger(__name__)


class ChatError(Exception):
    """The chat service did not accept the message, or the URL cannot be used."""


@dataclass(frozen=True)
class ChatUrl:
    """What may be shown of a channel URL."""

    service: str  # "Slack", "DingTalk", "JSON"...
    scheme: str
    masked: str  # "slack://T...2/A...D/T...Q", "json://127.0.0.1:8080/h...k"


# --- Secrets never leave in full ------------------------------------------------------


def _mask_segment(segment: str) -> str:
    if "..." in segment or set(segment) <= {"*"} or not segment:
        return segment  # Apprise masked it already
    if len(segment) < MIN_SECRET:
        return "****"
    return f"{segment[0]}...{segment[-1]}"


def _masked(plugin: NotifyBase) -> str:
    """Apprise's private form of the URL without its parameters, every path part masked
    (Apprise keeps the path of a JSON endpoint, which often holds a token)."""
    private = plugin.url(privacy=True).split("?", 1)[0]
    scheme, _, rest = private.partition("://")
    authority, _, path = rest.partition("/")
    parts = [_mask_segment(unquote(p)) for p in path.split("/") if p]
    return f"{scheme}://{authority}" + "".join(f"/{p}" for p in parts)


def _tokens(text: str) -> set[str]:
    parts = urlsplit(text)
    # From the netloc as written: .hostname is lower-cased, and a token there is not.
    userinfo, _, hostport = parts.netloc.rpartition("@")
    found = {*userinfo.split(":"), hostport, *hostport.rsplit(":", 1), parts.fragment}
    found.update(parts.path.split("/"))
    found.update(value for _key, value in parse_qsl(parts.query, keep_blank_values=True))
    return {t for t in found if t}


def secrets_of(url: str, masked: str = "") -> list[str]:
    """The parts of url that the masked form does not show, longest first."""
    shown = _tokens(masked) | set(masked.replace("/", " ").replace(":", " ").split())
    found = {url} if len(url) >= 16 else set()
    for token in _tokens(url) | _tokens(unquote(url)):
        for piece in (token, unquote(token)):
            if len(piece) >= MIN_SECRET and piece not in shown:
                found.add(piece)
    return sorted(found, key=len, reverse=True)


def scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "****")
    return text


# --- What Apprise says while Portmon uses a URL ----------------------------------------

_state = threading.local()


class _ScrubFilter(logging.Filter):
    """While this thread uses a channel URL, every record that Apprise or the HTTP stack
    under it logs (at any level, to any handler) is scrubbed of the URL's secrets; Apprise's
    warnings and errors are kept as the reason a send failed."""

    def __init__(self, *, reasons: bool):
        super().__init__()
        self.reasons = reasons

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = getattr(_state, "secrets", None)
        if secrets is None:
            return True
        record.msg = scrub(record.getMessage(), secrets)
        record.args = ()
        if self.reasons and record.levelno >= logging.WARNING:
            _state.reasons.append(record.msg)
        return True


# A logger's filters see only what is logged on that logger itself, so each is named:
# urllib3 logs the request path at DEBUG ("POST /hook/<token>").
for _name, _reasons in (
    ("apprise", True),
    ("urllib3.connectionpool", False),
    ("urllib3.connection", False),
    ("urllib3.util.retry", False),
    ("requests", False),
):
    _logger = logging.getLogger(_name)
    if not any(isinstance(f, _ScrubFilter) for f in _logger.filters):
        _logger.addFilter(_ScrubFilter(reasons=_reasons))


# --- Connections checked as webhooks are ------------------------------------------------

# (A second import of this module, e.g. a reload, wraps the original, not its own wrapper.)
_original_create_connection = getattr(
    urllib3.util.connection.create_connection,
    "portmon_original",
    urllib3.util.connection.create_connection,
)


def _create_connection(
    address: tuple[str, int],
    timeout: _TYPE_TIMEOUT = _DEFAULT_TIMEOUT,
    source_address: tuple[str, int] | None = None,
    socket_options: _TYPE_SOCKET_OPTIONS | None = None,
) -> socket.socket:
    """urllib3's create_connection (requests, so Apprise, connect through it); while this
    thread sends to a chat channel, each resolved address is checked before connecting."""
    if not getattr(_state, "checked", False):
        return _original_create_connection(address, timeout, source_address, socket_options)
    # urllib3's "default" sentinel (or None): the socket's default timeout.
    seconds = timeout if isinstance(timeout, int | float) else None
    host, port = address
    try:
        return connect_checked((host.strip("[]"), port), seconds, source_address, socket_options)
    except WebhookError as exc:
        _state.refusal = str(exc)
        # An OSError: requests reports it as a connection error like any other.
        raise ConnectionRefusedError(str(exc)) from None


_create_connection.portmon_original = _original_create_connection  # type: ignore[attr-defined]
urllib3.util.connection.create_connection = _create_connection


@contextmanager
def _using(url: str, masked: str, *, check_destinations: bool) -> Iterator[threading.local]:
    _state.secrets = secrets_of(url, masked)
    _state.reasons = []
    _state.refusal = ""
    _state.checked = check_destinations
    try:
        yield _state
    finally:
        _state.secrets = None
        _state.checked = False


# --- The interface ---------------------------------------------------------------------


def _instantiate(url: str) -> tuple[NotifyBase, str]:
    url = url.strip()
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if not scheme:
        raise ChatError(f"not a URL ({EXAMPLES})")
    plugin = apprise.Apprise.instantiate(url, suppress_exceptions=True)
    if plugin is None:
        reasons = getattr(_state, "reasons", None) or []
        detail = f": {reasons[-1]}" if reasons else ""
        raise ChatError(f"not a usable {scheme}:// URL{detail} ({EXAMPLES})")
    protocols: set[str] = set()
    for value in (plugin.protocol, plugin.secure_protocol):
        protocols.update([value] if isinstance(value, str) else value or ())
    if not protocols & ALLOWED_SCHEMES:
        raise ChatError(
            f"{scheme}:// ({plugin.service_name}) is not a chat service Portmon sends to; "
            f"supported: {', '.join(sorted(ALLOWED_SCHEMES))}"
        )
    return plugin, sorted(protocols & ALLOWED_SCHEMES)[0]


def chat_url_check(url: str, *, allow_local: bool) -> ChatUrl:
    """Parse and check a channel URL; raises ChatError saying what is wrong (the message
    never holds the URL's secrets)."""
    with _using(url, "", check_destinations=False) as state:
        try:
            plugin, scheme = _instantiate(url)
        except ChatError as exc:
            raise ChatError(scrub(str(exc), state.secrets)) from None
        masked = _masked(plugin)
        state.secrets = secrets_of(url, masked)
        if scheme in CUSTOM_HOST_SCHEMES and not allow_local:
            refusal = host_refusal(str(plugin.host))
            if refusal:
                raise ChatError(scrub(refusal, state.secrets))
        return ChatUrl(service=str(plugin.service_name), scheme=scheme, masked=masked)


def _explicit(url: str, name: str) -> bool:
    return any(key == name for key, _ in parse_qsl(urlsplit(url).query))


def chat_send(
    *, url: str, title: str, body: str, notify_type: str, timeout: float, allow_local: bool
) -> None:
    """Send one message; returns only when the service accepted it, else raises ChatError.

    timeout: seconds to connect and for each read, unless the URL sets cto= / rto=.
    allow_local: loopback, link-local and metadata destinations too (as for webhooks).
    """
    with _using(url, "", check_destinations=not allow_local) as state:
        try:
            plugin, _scheme = _instantiate(url)
        except ChatError as exc:
            raise ChatError(scrub(str(exc), state.secrets)) from None
        state.secrets = secrets_of(url, _masked(plugin))
        if not _explicit(url, "cto"):
            plugin.socket_connect_timeout = timeout
        if not _explicit(url, "rto"):
            plugin.socket_read_timeout = timeout
        started = time.monotonic()
        try:
            accepted = plugin.notify(
                body=body,
                title=title,
                notify_type=notify_type,
                body_format=apprise.NotifyFormat.TEXT,
            )
        except Exception as exc:  # a plugin bug must read as a failed send, not a crash
            state.reasons.append(f"{type(exc).__name__}: {exc}")
            accepted = False
        elapsed = time.monotonic() - started
        if accepted and not state.refusal:
            return
        if state.refusal:
            reason = state.refusal
        else:
            reason = "; ".join(dict.fromkeys(state.reasons)) or "no reason given"
            if elapsed >= timeout:
                reason += f" (no answer within {timeout:g} s)"
        raise ChatError(scrub(f"{plugin.service_name} did not accept it: {reason}", state.secrets))
