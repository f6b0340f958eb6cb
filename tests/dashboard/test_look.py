"""What every page shares: the viewport, the stylesheet and icon, one date format with the
zone; the overview's first-run note."""

import re
from datetime import UTC, datetime

from django.contrib.staticfiles import finders

from scanner.models import Host, ScanRun

PAGES = (
    "/",
    "/since/",
    "/events/",
    "/hosts/",
    "/hosts/198.18.0.10/",
    "/runs/",
    "/rules/",
    "/rules/new/",
    "/networks/",
    "/agents/",
    "/policies/",
    "/audit/",
)
# Django's default en formats ("Dec. 6, 2026, 6:42 p.m.") and zone-less times: what pages
# showed beside "2026-12-06 18:42" before one format was set.
OTHER_DATES = re.compile(r"\b(a\.m\.|p\.m\.|midnight|noon)|\b[A-Z][a-z]{2}\.? \d{1,2}, \d{4}")
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=\"/static/)")
TIME = re.compile(r'<time datetime="([^"]+)">([^<]*)</time>')


def pages_of(client, world):
    for path in (*PAGES, f"/events/{world['mysql'].pk}/", f"/runs/{world['run'].pk}/"):
        response = client.get(path)
        assert response.status_code == 200, path
        yield path, response.content.decode()


def test_it_gives_every_page_the_viewport_stylesheet_and_icon(login, users, world, client):
    login_page = client.get("/accounts/login/").content.decode()
    for path, page in [("/accounts/login/", login_page), *pages_of(login(users["admin"]), world)]:
        assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page, path
        assert '<link rel="stylesheet" href="/static/dashboard/portmon.css">' in page, path
        assert '<link rel="icon" href="/static/dashboard/favicon.svg"' in page, path
        # The CSP allows no inline script (a file from this site, as the events list's
        # select-all, is fine); the stylesheet is a file now, not a <style>.
        assert not INLINE_SCRIPT.search(page) and "<style" not in page, path
    assert finders.find("dashboard/portmon.css") and finders.find("dashboard/favicon.svg")
    # The admin and the API docs have no <link rel=icon>: browsers ask for /favicon.ico.
    icon = client.get("/favicon.ico")
    assert icon.status_code == 302 and icon["Location"] == "/static/dashboard/favicon.svg"


def test_it_writes_every_moment_one_way_with_the_zone(login, users, world, settings):
    settings.TIME_ZONE = "Europe/Berlin"
    moment = datetime(2026, 1, 15, 12, 30, 5, tzinfo=UTC)
    Host.objects.filter(pk=world["a"].pk).update(first_seen=moment, last_seen=moment)
    ScanRun.objects.filter(pk=world["run"].pk).update(created_at=moment, finished_at=moment)
    client = login(users["admin"])
    hosts = client.get("/hosts/").content.decode()
    assert '<time datetime="2026-01-15T13:30:05+01:00">2026-01-15 13:30 CET</time>' in hosts
    seen = 0
    for path, page in pages_of(client, world):
        assert not OTHER_DATES.search(page), (path, OTHER_DATES.search(page))
        for iso, text in TIME.findall(page):
            seen += 1
            assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d (CET|CEST)", text), (path, text)
            assert datetime.fromisoformat(iso).tzinfo is not None, (path, iso)
    assert seen >= 20
    # Summer time names itself too.
    settings.TIME_ZONE = "America/New_York"
    moment = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    Host.objects.filter(pk=world["a"].pk).update(last_seen=moment)
    assert "2026-07-01 08:00 EDT</time>" in client.get("/hosts/").content.decode()


def test_it_tells_a_new_user_what_to_do_until_the_first_scan(
    login, users, world, settings, tmp_path
):
    # The laptop default (no EMAIL_HOST); the test runner had swapped in locmem.
    settings.EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    settings.EMAIL_FILE_PATH = tmp_path / "mail"
    client = login(users["viewer"])
    assert 'id="first-run"' not in client.get("/").content.decode()  # the world has a run
    ScanRun.objects.all().delete()
    page = client.get("/").content.decode()
    assert 'id="first-run"' in page
    assert "bin/pm scope add" in page and "bin/pm scan" in page
    assert "baseline" in page
    assert f"into files in {tmp_path / 'mail'}" in page  # where the mail goes
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "mail.example.org", 587
    assert "to the SMTP server mail.example.org:587" in client.get("/").content.decode()


def test_it_links_the_high_risk_ports_to_the_admin_for_staff_only(login, users, world):
    users["admin"].is_staff = True
    users["admin"].save()
    link = 'href="/admin/alerts/highriskport/"'
    assert link in login(users["admin"]).get("/rules/").content.decode()
    assert link not in login(users["viewer"]).get("/rules/").content.decode()


def test_it_gives_every_table_on_every_page_a_header_row(login, users, world):
    """The host page's events table had none: a reader had to guess each column."""
    seen = 0
    for path, page in pages_of(login(users["admin"]), world):
        for table in re.findall(r"<table[^>]*>(.*?)</table>", page, re.S):
            seen += 1
            assert "<th" in table, (path, table[:200])
    assert seen >= 15
