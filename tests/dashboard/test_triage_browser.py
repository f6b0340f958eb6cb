"""Triage in headless Chromium against a live server (issue 23, "Done when"): ten new
events of one kind in at most 4 clicks plus a reason; an allow rule from an event that
resolves what it matches in one submit; the triage pages at 390 and 800 px without
sideways scroll, with screenshots (kept in $PORTMON_SCREENSHOTS when it is set)."""

import os
from pathlib import Path

import pytest
from django.utils import timezone

from alerts.models import AlertEvent, EventAudit, Rule
from scanner.models import Host
from tests.dashboard.conftest import PASSWORD, chromium_start, event
from tests.dashboard.test_browser import navigate_by
from tests.dashboard.test_responsive import WIDTHS, capture, console_errors

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def chrome(tmp_path):
    driver = chromium_start(tmp_path)
    yield driver
    driver.quit()


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("PORTMON_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {folder}")
    return folder


def log_in(browser, live_server, name: str, path: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{live_server.url}{path}")
    browser.find_element(By.NAME, "username").send_keys(name)
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    navigate_by(browser, browser.find_element(By.CSS_SELECTOR, "form button[type=submit]"))


class Clicks:
    """Every click of the user goes through here, so the test counts them."""

    def __init__(self, browser) -> None:
        self.browser, self.count = browser, 0

    def __call__(self, element, *, loads: bool = False) -> None:
        self.count += 1
        if loads:
            navigate_by(self.browser, element)
        else:
            element.click()


def test_it_triages_ten_new_events_of_one_kind_in_four_clicks_and_a_reason(
    chrome, live_server, users, world, shots
):
    from selenium.webdriver.common.by import By

    changed = [
        event(
            Host.objects.create(ip=f"198.18.0.{50 + i}", network=world["net"]),
            443,
            "service_changed",
            detail={
                "zone": "internal",
                "old": {"service": "https", "product": "nginx", "version": "1.24"},
                "new": {"service": "https", "product": "nginx", "version": "1.26"},
            },
        )
        for i in range(10)
    ]
    others = dict(AlertEvent.objects.exclude(kind="service_changed").values_list("pk", "state"))
    log_in(chrome, live_server, "triager", "/events/")
    capture(chrome, shots / "triage-1-events.png")
    click = Clicks(chrome)

    # 1: a row's kind narrows the list to that kind (the filters stay in the URL).
    kind = chrome.find_element(By.CSS_SELECTOR, "a.kind[href*='kind=service_changed']")
    click(kind, loads=True)
    assert "kind=service_changed" in chrome.current_url
    rows = chrome.find_elements(By.CSS_SELECTOR, "#events input.pick")
    assert len(rows) == 10
    # 2: select all.
    click(chrome.find_element(By.ID, "select-all"))
    assert all(box.is_selected() for box in rows)
    assert chrome.find_element(By.ID, "picked").text == "10 selected:"
    # 3: the reason box, then the reason.
    click(chrome.find_element(By.ID, "bulk-reason"))
    chrome.switch_to.active_element.send_keys("nginx upgrade, planned in CHG-1234")
    capture(chrome, shots / "triage-2-selected.png")
    # 4: ignore.
    click(chrome.find_element(By.CSS_SELECTOR, "#bulk button[value=ignore]"), loads=True)

    assert click.count <= 4
    assert "10 event(s) now ignored" in chrome.find_element(By.CSS_SELECTOR, ".messages").text
    ids = [e.pk for e in changed]
    assert set(AlertEvent.objects.filter(pk__in=ids).values_list("state", flat=True)) == {"ignored"}
    assert EventAudit.objects.filter(event_id__in=ids, actor=users["triager"]).count() == 10
    assert dict(AlertEvent.objects.filter(pk__in=others).values_list("pk", "state")) == others
    # Back on the same filtered list of open events: nothing left to do there.
    assert chrome.find_elements(By.CSS_SELECTOR, "#events input.pick") == []
    capture(chrome, shots / "triage-3-done.png")


def test_it_resolves_the_open_events_an_allow_rule_from_an_event_matches_in_one_submit(
    chrome, live_server, users, world, shots
):
    from selenium.webdriver.common.by import By

    a, mysql = world["a"], world["mysql"]
    # The same port again, under another kind; and the same port on another host.
    changed = event(a, 3306, "service_changed", detail={"zone": "internal"})
    elsewhere = event(world["b"], 3306, "new_port")
    log_in(chrome, live_server, "admin", f"/events/{mysql.pk}/")
    navigate_by(chrome, chrome.find_element(By.ID, "allow-rule"))

    # Prefilled, owner included; the dry run is on the page before anything is typed.
    assert chrome.find_element(By.NAME, "ip_cidr").get_attribute("value") == "198.18.0.10"
    assert chrome.find_element(By.NAME, "port_lo").get_attribute("value") == "3306"
    assert chrome.find_element(By.NAME, "owner").get_attribute("value") == "a@x.org"
    labels = chrome.find_element(By.ID, "rule-form").text
    assert "IP / CIDR" in labels and "Port from" in labels and "Ip cidr" not in labels
    assert "Dry run: 2 open events match" in chrome.find_element(By.ID, "dry-run").text
    capture(chrome, shots / "rule-from-event.png")

    navigate_by(chrome, chrome.find_element(By.CSS_SELECTOR, "button[name=save]"))  # one submit
    rule = Rule.objects.get(ip_cidr="198.18.0.10")
    assert chrome.current_url.endswith(f"/events/{mysql.pk}/")
    assert "2 open event(s) it matches resolved" in chrome.find_element(By.TAG_NAME, "main").text
    assert chrome.find_element(By.ID, "state").text == "ignored"
    assert f"allowed by rule #{rule.pk}" in chrome.find_element(By.ID, "audit").text
    states = dict(AlertEvent.objects.values_list("pk", "state"))
    assert states[mysql.pk] == states[changed.pk] == "ignored"
    assert states[elsewhere.pk] == "new"
    capture(chrome, shots / "rule-resolved-event.png")


def test_it_fits_the_triage_pages_in_390_and_800_px(chrome, live_server, users, world, shots):
    from selenium.webdriver.common.by import By

    now = timezone.now()
    long = "averyveryverylongproductnamewithoutanyspace" * 3
    hosts = Host.objects.bulk_create(
        [Host(ip=f"198.18.0.{i}", network=world["net"]) for i in range(100, 160)]
    )
    AlertEvent.objects.bulk_create(
        [
            AlertEvent(
                host=h,
                port=p,
                kind="service_changed",
                created_at=now,
                updated_at=now,
                detail={
                    "zone": "internal",
                    "process": long,
                    "old": {"product": long},
                    "new": {"product": long + "2"},
                },
                open_key=f"{h.pk}/tcp/{p}/service_changed",
            )  # fmt: skip
            for h in hosts
            for p in range(8000, 8020)
        ]
    )
    crowded_event = AlertEvent.objects.filter(kind="service_changed").first()
    world["net"].owner_email = "network-owner-with-a-long-address@security.example.org"
    world["net"].save()
    pages = {
        "events": "/events/",
        "events-search": "/events/?q=198.18.0&sort=newest",
        "events-bad-filter": "/events/?host=300.1.1.1&port=http&q=%3Cscript%3E",
        "events-all-states": "/events/?state=all",
        "rule-from-event": f"/rules/new/?from_event={world['mysql'].pk}",
        "rule-from-agent-event": f"/rules/new/?from_event={crowded_event.pk}",
    }
    log_in(chrome, live_server, "admin", "/events/")
    too_wide, errors = [], []
    for width, metrics in WIDTHS.items():
        chrome.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        console_errors(chrome)
        for name, path in pages.items():
            chrome.get(f"{live_server.url}{path}")
            assert chrome.find_element(By.TAG_NAME, "h1").text, name
            inner, scroll = chrome.execute_script(
                "return [window.innerWidth, document.documentElement.scrollWidth]"
            )
            assert inner == width, f"{name}: laid out {inner} px wide, not {width}"
            if scroll > inner:
                too_wide.append(f"{name} at {width} px: scrollWidth {scroll}")
            errors += [f"{name}: {m}" for m in console_errors(chrome)]
            capture(chrome, shots / f"{width}-triage-{name}.png")
    assert too_wide == []
    assert errors == []  # the triage stylesheet and script load under the CSP
