"""scan_import is offline and honest about time: the run is dated by the file, its diff is
queued (and --wait reports it), an old file alerts through the digest only, nothing probes
the file's addresses without --poc, and a banner cannot forge lines of an email."""

from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from alerts.models import AlertEvent
from alerts.notify.models import Message
from alerts.notify.services.digest import digest_prepare, digest_render
from alerts.notify.services.immediate import immediate_queue
from alerts.services.diff import run_diff
from poc.services.chain import pocs_chain
from scanner.models import Network, PortObservation, ScanRun
from tests.alerts.nmapxml import nmap_xml
from tests.scanner.test_scan_import import MASSCAN_JSON

NET = "198.18.0.0/24"
FILE_TIME = datetime(2026, 6, 15, 8, 0, tzinfo=UTC)  # start="1781510400" in the files
FORGED = "RDP\n\nAll clear: no high-risk exposures today."


@pytest.fixture
def network(db, settings):
    settings.SITE_URL = "http://portmon.test"
    settings.PORTMON_DIGEST_RECIPIENTS = ["sec-team@example.com"]
    return Network.objects.create(cidr=NET, zone="internal", owner_email="owner@example.com")


def scan_import(*args) -> str:
    out = StringIO()
    call_command("scan_import", *map(str, args), stdout=out, stderr=StringIO())
    return out.getvalue()


def nmap_file(tmp_path, hosts, name="scan.xml"):
    path = tmp_path / name
    path.write_text(nmap_xml(targets=NET, ports="1-65535", hosts=hosts))
    return path


def test_it_dates_the_run_by_the_file_and_says_the_diff_is_queued(network, tmp_path):
    out = scan_import(nmap_file(tmp_path, {"198.18.0.5": [(22, "ssh", "OpenSSH")]}))
    run = ScanRun.objects.get()
    assert run.finished_at == FILE_TIME
    assert f"at {FILE_TIME.isoformat()} (the file's time)" in out
    assert f"diff of run {run.pk} queued: a worker on the default queue diffs it" in out
    assert "digest only" in out  # June's file is older than a few hours
    assert "no PoC check probes these ports (--poc to allow)" in out

    masscan = tmp_path / "masscan.json"
    masscan.write_text(MASSCAN_JSON.replace('"1781510400"', '"1781514000"', 1))
    scan_import(masscan, "--targets", NET)
    # The earliest of the records' timestamps.
    assert ScanRun.objects.latest("id").finished_at == FILE_TIME


def test_it_refuses_a_file_time_that_is_no_time(network, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(MASSCAN_JSON.replace('"1781510400"', '"next tuesday"', 1))
    with pytest.raises(CommandError, match=r'record 1: "timestamp": not a Unix time'):
        scan_import(path, "--targets", NET)


def test_wait_says_when_no_worker_diffs_the_run(network, tmp_path):
    path = nmap_file(tmp_path, {"198.18.0.5": [(22, "ssh", "OpenSSH")]})
    with pytest.raises(CommandError, match=r"not diffed after 1 s; is a worker running"):
        scan_import(path, "--wait", "--wait-timeout", "1")


def _import_and_diff(tmp_path, hosts, *args, name="scan.xml") -> ScanRun:
    scan_import(nmap_file(tmp_path, hosts, name), *args)
    run = ScanRun.objects.latest("id")
    run_diff(run_id=run.pk)
    return run


def test_an_old_file_alerts_through_the_digest_only(network, tmp_path):
    old = _import_and_diff(tmp_path, {"198.18.0.7": [(6379, "redis", "Redis")]})
    [event] = AlertEvent.objects.filter(run=old, kind="high_risk")
    assert event.immediate and immediate_queue(event_ids=[event.pk]) == 0
    assert not Message.objects.exists()
    # The same port in a file of a scan that just ran: an immediate alert.
    now = timezone.now().replace(microsecond=0)
    fresh = _import_and_diff(
        tmp_path, {"198.18.0.8": [(6379, "redis", "Redis")]}, "--at", now.isoformat(), name="b"
    )
    [event] = AlertEvent.objects.filter(run=fresh, kind="high_risk")
    assert immediate_queue(event_ids=[event.pk]) == 2  # owner + sec-team
    # The old run's event is in the digest.
    _, text, _ = digest_render(
        digest=digest_prepare(
            recipient="sec-team@example.com", network_ids=None, channel="email", now=timezone.now()
        )
    )
    assert "198.18.0.7:6379" in text


def test_an_import_chains_no_poc_check_unless_asked(network, tmp_path):
    now = timezone.now().replace(microsecond=0)
    # A baselined network, so that the new Redis is an event either way.
    hosts = {"198.18.0.5": [(22, "ssh", "OpenSSH")]}
    _import_and_diff(tmp_path, hosts, "--at", (now - timedelta(days=9)).isoformat(), name="a")
    redis = {**hosts, "198.18.0.9": [(16379, "redis", "Redis key-value store")]}
    offline = _import_and_diff(tmp_path, redis, "--at", now.isoformat(), name="b")
    events = list(AlertEvent.objects.filter(run=offline).values_list("id", flat=True))
    assert events and pocs_chain(event_ids=events) == []

    asked = _import_and_diff(
        tmp_path,
        {**redis, "198.18.0.10": [(16379, "redis", "Redis key-value store")]},
        "--at",
        (now + timedelta(minutes=1)).isoformat(),
        "--poc",
        name="c",
    )
    events = list(AlertEvent.objects.filter(run=asked).values_list("id", flat=True))
    assert len(pocs_chain(event_ids=events)) == 1


def test_a_banner_cannot_forge_lines_of_an_email(network, tmp_path):
    now = timezone.now().replace(microsecond=0)
    run = _import_and_diff(
        tmp_path, {"198.18.0.11": [(3389, "ms-wbt-server", FORGED)]}, "--at", now.isoformat()
    )
    [product] = PortObservation.objects.filter(run=run).values_list("product", flat=True)
    assert product == "RDP All clear: no high-risk exposures today."
    [event] = AlertEvent.objects.filter(run=run, kind="high_risk")
    assert immediate_queue(event_ids=[event.pk]) == 2
    _, digest_text, digest_html = digest_render(
        digest=digest_prepare(
            recipient="sec-team@example.com", network_ids=None, channel="email", now=timezone.now()
        )
    )
    message = Message.objects.filter(channel="email").first()
    for text in (message.text, message.html, digest_text, digest_html):
        assert "198.18.0.11" in text
        for line in text.splitlines():
            assert not line.strip().startswith("All clear"), text


def test_every_email_field_renders_on_one_line_whatever_was_stored(network):
    from alerts.notify.templating import email_render

    item = type("Item", (), {})()
    for name, value in {
        "kind_label": "high-risk port",
        "kind_title": "High-risk port",
        "severity_label": "high",
        "severity_colour": "#c2410c",
        "evidence_lines": ("RDP", FORGED),
        "endpoint": "198.18.0.12:3389/tcp",
        "summary": FORGED,
        "network": "lab\r\nBcc: x@example.com",
        "created_at": timezone.now(),
        "rule_text": "",
        "url": "http://portmon.test/events/1/",
    }.items():
        setattr(item, name, value)
    subject, text, html = email_render(
        "immediate", {"item": item, "site_url": "http://portmon.test", "fmt": str}
    )
    for part in (subject, text, html):
        assert "\nAll clear" not in part and "\nBcc:" not in part
        assert "RDP All clear" in part
