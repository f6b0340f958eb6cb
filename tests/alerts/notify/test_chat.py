"""Chat channels (Apprise) through the real outbox to a real HTTP receiver on 127.0.0.1:
JSON and form endpoints, retries after a receiver that is down or answers 500, one that
hangs, malformed URLs, and a URL's secret never shown or logged."""

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from django.conf import settings as django_settings
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from alerts.notify import channels
from alerts.notify.models import ChatChannel, Message, MessageState
from alerts.notify.services.delivery import messages_send_due
from alerts.notify.services.digest import digest_queue
from alerts.notify.services.immediate import immediate_queue
from tests.alerts.notify.conftest import NOW, SITE, event_make, free_port

pytestmark = pytest.mark.django_db

TOKEN = "Xq7tokenZZ91secret"
PASSWORD = "pw-Hunter2-long"


class ChatReceiver:
    """A chat service's webhook endpoint on 127.0.0.1: records what it accepted; `statuses`
    answers the next requests in turn (then 200); `hang` holds every answer until released;
    stop() closes the port and start() opens the same one again."""

    def __init__(self):
        self.port = free_port()
        self.requests: list[dict] = []
        self.statuses: list[int] = []
        self.hang = False
        self.release = threading.Event()
        self.httpd = None

    def start(self) -> None:
        box = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if box.hang:
                    box.release.wait(10)
                    return  # never answers; the client has given up by now
                status = box.statuses.pop(0) if box.statuses else 200
                if status == 200:
                    kind = self.headers.get("Content-Type", "")
                    parsed = (
                        json.loads(body)
                        if "json" in kind
                        else {k: v[0] for k, v in parse_qs(body.decode()).items()}
                    )
                    box.requests.append({"path": self.path, "type": kind, "body": parsed})
                self.send_response(status)
                self.end_headers()
                self.wfile.write(f"echo {self.path}".encode())

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.httpd is not None:
            self.release.set()
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    def url(self, scheme: str = "json", path: str = f"/hook/{TOKEN}") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def bodies(self, path_part: str = "") -> list[dict]:
        return [r["body"] for r in self.requests if path_part in r["path"]]


@pytest.fixture
def receiver(settings):
    settings.PORTMON_WEBHOOK_ALLOW_LOCAL = True  # the receiver is on loopback
    settings.PORTMON_WEBHOOK_TIMEOUT = 2
    box = ChatReceiver()
    box.start()
    try:
        yield box
    finally:
        box.stop()


def channel(name: str, url: str, owner: str = "", **kw) -> ChatChannel:
    return channels.chat_channel_create(name=name, url=url, owner_email=owner, **kw)


def test_it_delivers_an_immediate_alert_to_the_owners_channels_after_an_outage(
    receiver, world, settings
):
    settings.PORTMON_DIGEST_RECIPIENTS = []
    alice = channel("alice-json", receiver.url("json", f"/alice/{TOKEN}"), "Alice@Example.com")
    channel("team-form", receiver.url("form", "/team/hook"))
    channel("bob-json", receiver.url("json", "/bob/hook"), "bob@example.com")
    event = event_make(
        world["host_a"],
        6379,
        "high_risk",
        immediate=True,
        at=NOW,
        detail={"reason": "new", "fingerprint": {"label": "redis Redis 7.2"}},
    )
    created = immediate_queue(event_ids=[event.pk], now=NOW)
    assert created == 3  # alice's email, alice's channel, the team's channel

    # Down: nothing listens on the port; then up but failing with 500; then accepted.
    receiver.stop()
    report = messages_send_due(now=NOW)
    assert (report.sent, report.retrying) == (1, 2)  # the email went; both chats wait
    message = Message.objects.get(chat_channel=alice)
    assert message.state == MessageState.PENDING and "Connection error" in message.last_error

    receiver.start()
    receiver.statuses = [500]
    report = messages_send_due(now=NOW + timedelta(minutes=1))
    assert (report.sent, report.retrying) == (1, 1)
    failed = Message.objects.filter(channel="chat", state=MessageState.PENDING).get()
    assert "error=500" in failed.last_error and failed.attempts == 2

    assert messages_send_due(now=NOW + timedelta(minutes=10)).sent == 1
    assert not Message.objects.filter(state=MessageState.PENDING).exists()

    [to_alice] = receiver.bodies("/alice/")
    assert to_alice["title"] == (
        "[Portmon] High-risk port: 198.18.1.5:6379/tcp - redis Redis 7.2 (new)"
    )
    assert to_alice["type"] == "failure"  # high severity: red in Slack, Teams...
    assert f"{SITE}/events/{event.pk}/" in to_alice["message"]
    assert "Network: 198.18.1.0/24" in to_alice["message"]
    [to_team] = receiver.bodies("/team/")
    assert to_team["title"] == to_alice["title"]
    assert receiver.bodies("/bob/") == []
    # The outbox row names the channel, never its URL.
    assert not Message.objects.filter(recipient__contains=TOKEN).exists()


def test_it_sends_each_channel_a_digest_summary_of_its_owners_networks(receiver, world):
    channel("alice-json", receiver.url("json", "/alice/x"), "alice@example.com", immediate=False)
    channel("team-json", receiver.url("json", "/team/x"))
    channel("bob-json", receiver.url("json", "/bob/x"), "bob@example.com")
    channel("no-digest", receiver.url("json", "/nod/x"), digest=False)
    for n in range(8):
        event_make(world["host_a"], 9000 + n, "new_port", at=NOW - timedelta(days=n + 2))
    fresh = event_make(world["host_a"], 3306, "high_risk", immediate=True)
    theirs = event_make(world["host_x"], 8080, "new_port")

    digest_queue(now=NOW)
    messages_send_due(now=NOW)

    [alice] = receiver.bodies("/alice/")
    assert alice["title"] == "[Portmon] Daily digest 2026-11-21: 1 high-risk, 8 still open"
    text = alice["message"]
    assert "Open now: 9 (1 high, 8 medium)" in text
    lines = [line for line in text.splitlines() if line.startswith("- [")]
    assert len(lines) == 9 and lines[0].startswith("- [high] 198.18.1.5:3306/tcp")
    assert "(9 d)" in lines[1] and "(2 d)" in lines[-1]  # then oldest first
    assert f"/events/{fresh.pk}/" in text and f"/events/{theirs.pk}/" not in text
    [team] = receiver.bodies("/team/")
    assert f"/events/{theirs.pk}/" in team["message"] and "... and" not in team["message"]
    # Bob has nothing, new or open: no chat message (the email still says "no changes").
    assert receiver.bodies("/bob/") == [] and receiver.bodies("/nod/") == []
    # Once a day, like the emails.
    assert digest_queue(now=NOW + timedelta(hours=1)) == []


def test_it_lists_the_ten_worst_in_chat_and_counts_the_rest(receiver, world, settings):
    settings.PORTMON_DIGEST_RECIPIENTS = []
    channel("team", receiver.url())
    for n in range(14):
        event_make(world["host_b"], 2000 + n, "new_port")
    digest_queue(now=NOW)
    messages_send_due(now=NOW)
    [body] = receiver.bodies()
    assert body["message"].count("\n- [medium] ") == 10 and "... and 4 more" in body["message"]


def test_a_hanging_channel_costs_one_timeout_per_pass_and_blocks_nobody(
    receiver, world, settings, smtp
):
    settings.PORTMON_WEBHOOK_TIMEOUT = 1
    hanging = channel("hangs", receiver.url("json", "/slow/x"))
    events = [
        event_make(world["host_a"], port, "high_risk", immediate=True, at=NOW)
        for port in (5432, 6379, 9200)
    ]
    immediate_queue(event_ids=[e.pk for e in events], now=NOW)
    receiver.hang = True

    started = time.monotonic()
    report = messages_send_due(now=NOW)
    elapsed = time.monotonic() - started

    assert report.sent == 6  # alice and the team, by email, for each event
    assert (report.retrying, report.skipped) == (1, 2)  # one timeout, the rest wait
    assert elapsed < 2 * settings.PORTMON_WEBHOOK_TIMEOUT + 2.5, elapsed
    tried = Message.objects.get(chat_channel=hanging, attempts=1)
    assert "no answer within 1 s" in tried.last_error

    receiver.hang = False
    receiver.release.set()
    assert messages_send_due(now=NOW + timedelta(minutes=2)).sent == 3
    assert len(receiver.bodies("/slow/")) == 3


@pytest.mark.parametrize(
    "url, says",
    [
        ("notaurl", "not a URL"),
        ("foo://bar", "not a usable foo:// URL"),
        ("json://", "not a usable json:// URL"),
        ("slack://", "not a usable slack:// URL"),
        ("mailto://user:pass@example.com", "is not a chat service Portmon sends to"),
        ("https://example.com/hook", "not a usable https:// URL"),
        ("json://127.0.0.1:8080/hook", "loopback address"),
        ("json://localhost/hook", "loopback address"),
        ("form://169.254.169.254/latest/meta-data", "link-local address"),
        ("jsons://[::ffff:127.0.0.1]/x", "loopback address"),
    ],
)
def test_it_refuses_a_malformed_or_forbidden_url_with_a_clear_reason(url, says, settings):
    settings.PORTMON_WEBHOOK_ALLOW_LOCAL = False
    with pytest.raises(ValidationError) as caught:
        channel("bad", url)
    [reason] = caught.value.message_dict["url"]
    assert says in reason
    assert not ChatChannel.objects.exists()


def test_it_refuses_to_connect_to_this_host_at_send_time_too(receiver, world, settings):
    # Saved while allowed (or a name that resolved elsewhere then): checked when connecting.
    settings.PORTMON_DIGEST_RECIPIENTS = []
    channel("local", receiver.url())
    settings.PORTMON_WEBHOOK_ALLOW_LOCAL = False
    event = event_make(world["host_x"], 23, "high_risk", immediate=True, at=NOW)
    immediate_queue(event_ids=[event.pk], now=NOW)

    assert messages_send_due(now=NOW).retrying == 1
    message = Message.objects.get(channel="chat")
    assert "loopback" in message.last_error
    assert "PORTMON_WEBHOOK_ALLOW_LOCAL" in message.last_error
    assert receiver.requests == []


def test_a_channels_secret_is_never_logged_or_shown(
    receiver, world, settings, caplog, admin_client
):
    caplog.set_level(logging.DEBUG)  # whatever LOG_LEVEL an operator chooses
    settings.PORTMON_DIGEST_RECIPIENTS = []
    url = f"json://portmon:{PASSWORD}@127.0.0.1:{receiver.port}/hook/{TOKEN}?rto=2"
    saved = channel("secret", url)
    assert saved.url_masked == f"json://portmon:****@127.0.0.1:{receiver.port}/h...k/X...t"
    event = event_make(world["host_a"], 6379, "high_risk", immediate=True, at=NOW)
    immediate_queue(event_ids=[event.pk], now=NOW)
    receiver.statuses = [500]  # its answer echoes the path, token included
    messages_send_due(now=NOW)
    message = Message.objects.get(channel="chat")
    assert "error=500" in message.last_error

    out = StringIO()
    call_command("notify", "list", stdout=out)
    pages = [
        admin_client.get("/admin/notify/chatchannel/").content.decode(),
        admin_client.get(f"/admin/notify/chatchannel/{saved.pk}/change/").content.decode(),
        admin_client.get(f"/admin/notify/message/{message.pk}/change/").content.decode(),
    ]
    assert "h...k/X...t" in pages[0] and "h...k/X...t" in out.getvalue()
    everything = "\n".join([caplog.text, message.last_error, out.getvalue(), *pages])
    assert "127.0.0.1" in caplog.text  # the logs were captured, and say where it went
    for secret in (TOKEN, PASSWORD):
        assert secret not in everything


def test_the_admin_keeps_the_saved_url_unless_a_new_one_is_given(receiver, admin_client):
    saved = channel("team", receiver.url())
    form = {"name": "team", "new_url": "", "owner_email": "Ops@Example.com", "enabled": "on"}
    response = admin_client.post(f"/admin/notify/chatchannel/{saved.pk}/change/", form)
    assert response.status_code == 302
    saved.refresh_from_db()
    assert saved.url == receiver.url() and saved.owner_email == "ops@example.com"
    assert not saved.digest  # unticked in the form

    form["new_url"] = "dingtalk://not a token"
    page = admin_client.post(f"/admin/notify/chatchannel/{saved.pk}/change/", form)
    assert page.status_code == 200 and "not a usable dingtalk:// URL" in page.content.decode()
    form["new_url"] = "wecombot://105a0acd-9a3e-4df8-a4f1-8a9e5f3a5bb1"
    admin_client.post(f"/admin/notify/chatchannel/{saved.pk}/change/", form)
    saved.refresh_from_db()
    assert saved.service == "WeCom Bot" and saved.url_masked == "wecombot://1...1"


# --- manage.py notify test ------------------------------------------------------------


def notify(*args) -> str:
    out = StringIO()
    call_command("notify", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_notify_test_sends_a_message_and_says_so(receiver):
    channel("team", receiver.url("form", "/team/x"), "ops@example.com")
    output = notify("test", "team")
    assert output == (
        f"channel team (Form, form://127.0.0.1:{receiver.port}/t...m/****): "
        "test message sent, the service accepted it\n"
    )
    [body] = receiver.bodies()
    assert body["title"] == "[Portmon] Test message" and "ops@example.com" in body["message"]
    assert not Message.objects.exists()  # a test is not an outbox message


def test_notify_test_says_why_a_message_did_not_arrive(receiver):
    channel("team", receiver.url())
    receiver.statuses = [403]
    with pytest.raises(CommandError, match="channel team: test message NOT sent: .*error=403"):
        notify("test", "team")
    with pytest.raises(CommandError, match="no chat channel named 'nope' \\(channels: team\\)"):
        notify("test", "nope")
    with pytest.raises(CommandError, match="URL: test message NOT sent: not a usable json://"):
        notify("test", "json://")


def test_notify_add_list_remove(receiver):
    assert notify("add", "team", receiver.url(), "--owner", "Ops@Example.com", "--no-digest") == (
        f"added team: JSON json://127.0.0.1:{receiver.port}/h...k/X...t\n"
    )
    assert notify("list") == (
        f"team  JSON  json://127.0.0.1:{receiver.port}/h...k/X...t  owner=ops@example.com"
        "  immediate\n"
    )
    with pytest.raises(CommandError, match="channel not added: .*not a usable foo:// URL"):
        notify("add", "other", "foo://bar")
    with pytest.raises(CommandError, match="exists already"):
        notify("add", "team", receiver.url())
    assert notify("remove", "team") == "removed team\n"
    assert "no chat channels" in notify("list")
    with pytest.raises(CommandError, match="no chat channel named 'team'"):
        notify("remove", "team")


def test_deleting_a_channel_drops_its_unsent_messages_and_keeps_the_sent_ones(
    receiver, world, admin_client, settings
):
    settings.PORTMON_DIGEST_RECIPIENTS = []
    doomed = channel("doomed", receiver.url())
    first = event_make(world["host_x"], 23, "high_risk", immediate=True, at=NOW)
    immediate_queue(event_ids=[first.pk], now=NOW)
    messages_send_due(now=NOW)
    second = event_make(world["host_x"], 21, "high_risk", immediate=True, at=NOW)
    immediate_queue(event_ids=[second.pk], now=NOW)

    admin_client.post(f"/admin/notify/chatchannel/{doomed.pk}/delete/", {"post": "yes"})
    assert not ChatChannel.objects.exists()
    [kept] = Message.objects.filter(channel="chat")
    assert kept.state == MessageState.SENT and kept.recipient == "doomed"
    assert messages_send_due(now=NOW + timedelta(minutes=1)).retrying == 0


@pytest.mark.parametrize(
    "url, says",
    [
        ("json://", "not a usable json:// URL"),
        ("json://127.0.0.1:9/x", "PORTMON_WEBHOOK_ALLOW_LOCAL"),
        ("slack://T1/B2", "not a usable slack:// URL"),
    ],
)
@pytest.mark.process
def test_notify_test_from_the_shell_prints_an_error_not_a_traceback(url, says):
    env = {k: v for k, v in os.environ.items() if k != "PORTMON_WEBHOOK_ALLOW_LOCAL"}
    done = subprocess.run(
        [sys.executable, "manage.py", "notify", "test", url],
        cwd=Path(django_settings.BASE_DIR),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    # Apprise's own warnings (scrubbed) may come first; the verdict is the last line.
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("CommandError: URL: test message NOT sent: ")
    assert says in last and "Traceback" not in done.stderr


# --- the documented examples ------------------------------------------------------------

DOC_EXAMPLES = {
    "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#security": "Slack",
    "https://hooks.slack.com/services/T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ": "Slack",
    "workflows://prod-00.westus.logic.azure.com:443/abc123/def456?signature=xyz789": (
        "Power Automate / Workflows (for MSTeams)"
    ),
    "dingtalk://abcdef0123456789abcdef/": "DingTalk",
    "dingtalk://SECsecret0123@abcdef0123456789abcdef/": "DingTalk",
    "wecombot://105a0acd-9a3e-4df8-a4f1-8a9e5f3a5bb1": "WeCom Bot",
    "feishu://abcdef12-3456-7890-abcd-ef1234567890": "Feishu",
    "lark://abcdef12-3456-7890-abcd-ef1234567890": "Lark (Feishu)",
    "json://chat-relay.example.com/portmon/hook": "JSON",
    "jsons://user:password@chat-relay.example.com/hook": "JSON",
    "form://chat-relay.example.com:8080/hook": "Form",
}


def test_every_url_example_in_the_docs_is_accepted_for_its_service():
    doc = (Path(django_settings.BASE_DIR) / "docs" / "notifications.md").read_text()
    for url, service in DOC_EXAMPLES.items():
        assert url in doc, url
        assert channels.chat_url_validate(url).service == service, url


@pytest.mark.parametrize(
    "host, says",
    [
        ("127.0.0.1", "PORTMON_WEBHOOK_ALLOW_LOCAL"),
        ("localhost", "PORTMON_WEBHOOK_ALLOW_LOCAL"),
        ("[::ffff:127.0.0.1]", "not a usable json:// URL"),  # Apprise does not take these
        ("127.1", "not a usable json:// URL"),
    ],
)
def test_it_sends_nothing_to_this_host_however_it_is_spelt(host, says):
    from alerts.notify.chat import ChatError, chat_send

    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    port = server.getsockname()[1]
    try:
        with pytest.raises(ChatError, match=says):
            chat_send(
                url=f"json://{host}:{port}/hook",
                title="t",
                body="b",
                notify_type="info",
                timeout=2,
                allow_local=False,
            )
        with pytest.raises(BlockingIOError):
            server.accept()  # no connection was even attempted
    finally:
        server.close()


@pytest.mark.parametrize(
    "url, secrets",
    [
        (
            "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#security",
            ["T1JJ3T3L2", "A1BRTD4JD", "TIiajkdnlazkcOXrIdevi7FQ"],
        ),
        (
            "https://hooks.slack.com/services/T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ",
            ["T1JJ3T3L2", "A1BRTD4JD", "TIiajkdnlazkcOXrIdevi7FQ"],
        ),
        ("dingtalk://SECsecret0123@abcdef0123456789abcdef/", ["SECsecret0123", "abcdef0123"]),
        ("wecombot://105a0acd-9a3e-4df8-a4f1-8a9e5f3a5bb1", ["105a0acd-9a3e"]),
        ("feishu://abcdef12-3456-7890-abcd-ef1234567890", ["abcdef12-3456"]),
        ("jsons://user:password@chat-relay.example.com/hook/Tok3nTok3n", ["password", "Tok3n"]),
    ],
)
def test_it_masks_and_scrubs_every_token_of_a_url(url, secrets):
    from alerts.notify.chat import chat_url_check, scrub, secrets_of

    masked = chat_url_check(url, allow_local=False).masked
    said = scrub(f"failed to post to {url} ({url.split('://')[1]})", secrets_of(url, masked))
    for secret in secrets:
        assert secret not in masked and secret not in said, (masked, said)
