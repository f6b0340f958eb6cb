"""Every main page in headless Chromium at a phone's 390 px and a narrow window's 800 px:
no horizontal scroll, no failed load or CSP refusal in the console, screenshots kept."""

import base64
import os
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from agents.models import Agent, AgentHost
from alerts.models import AlertEvent, EventNote
from audit.models import AuditEntry
from scanner.models import Host, Port, PortObservation, ScanPolicy, ScanRun
from tests.dashboard.conftest import PASSWORD, chromium_start, event

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Unbroken words longer than any screen: the content that pushes a page wider.
LONG = "x" * 40 + "-".join(["averyveryverylongwordwithoutanyspace"] * 6)
# A banner-derived product string as nmap may report it: 2,000 characters, few spaces.
PRODUCT = ("Apache/2.4.57 (Unix) mod_" + "x" * 300 + " ") * 5 + "y" * 400

WIDTHS = {
    # A phone: mobile emulation, so the layout viewport is 390 px only with the viewport
    # meta tag (without it Chromium lays the page out 980 px wide and shrinks it).
    390: {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True},
    800: {"width": 800, "height": 900, "deviceScaleFactor": 1, "mobile": False},
}


@pytest.fixture
def chromium(tmp_path):
    driver = chromium_start(tmp_path, window=None, implicit_wait=0)
    yield driver
    driver.quit()


@pytest.fixture
def crowded(world):
    """The dashboard world plus what makes pages wide: long names, reasons, notes, evidence,
    an agent, a policy, audit entries with big before/after."""
    now = timezone.now()
    a = world["a"]
    Host.objects.filter(pk=a.pk).update(hostname=f"db-{LONG[:150]}.example.org")
    poc = event(
        a,
        6379,
        "poc_finding",
        run=world["run"],
        detail={"check": "redis_noauth", "title": f"Redis without auth {LONG}", "evidence": LONG},
    )
    EventNote.objects.create(event=world["ssh"], text=f"see ticket {LONG}", created_at=now)
    world["rule"].reason = f"lab web {LONG}"
    world["rule"].expires_at = now + timedelta(days=30)
    world["rule"].save()
    ScanPolicy.objects.create(
        name="nightly lab", targets=",".join(f"198.18.{i}.0/24" for i in range(40)), ports="1-65535"
    )
    agent = Agent.objects.create(name=f"agent-{LONG[:90]}", token_hash="x", last_report_at=now)
    AgentHost.objects.create(agent=agent, host=a)
    # The 2,000-character product on the event, the port, the run's finding.
    detail = {
        "zone": "internal",
        "service": "mysql",
        "product": PRODUCT,
        "old": {"product": PRODUCT},
    }
    AlertEvent.objects.filter(pk=world["mysql"].pk).update(detail=detail)
    Port.objects.filter(host=a, port=3306).update(product=PRODUCT[:200], version="8.0")
    PortObservation.objects.create(run=world["run"], host=a, port=3306, service="mysql",
                                   product=PRODUCT[:200], fingerprinted=True)  # fmt: skip
    imported = ScanRun.objects.create(
        targets="198.18.0.10", state="finished", source="import", source_name=f"{LONG[:200]}.xml"
    )
    AuditEntry.objects.create(
        action="policy.update",
        object_type="scanner.scanpolicy",
        object_id="1",
        object_repr="<b>nightly</b>",
        before={"targets": "<script>alert(1)</script>" + LONG, "ports": "1-1024"},
        after={"targets": "<img src=x onerror=alert(1)>" + LONG, "ports": "1-65535"},
    )
    AuditEntry.objects.create(
        action="rule.update",
        object_type="alerts.rule",
        object_id=str(world["rule"].pk),
        object_repr=LONG[:190],
        before={"reason": LONG, "ports": list(range(60))},
        after={"reason": LONG + "!", "ports": list(range(61))},
    )
    return world | {"poc": poc, "imported": imported}


def pages(w) -> dict[str, str]:
    return {
        "overview": "/",
        "since": "/since/",
        "events": "/events/",
        "events-filtered": "/events/?state=open&severity=low&host=198.18.0.0/24",
        "event": f"/events/{w['mysql'].pk}/",
        "event-poc": f"/events/{w['poc'].pk}/",
        "event-noted": f"/events/{w['ssh'].pk}/",
        "hosts": "/hosts/",
        "host": "/hosts/198.18.0.10/",
        "runs": "/runs/",
        "run": f"/runs/{w['run'].pk}/",
        "run-import": f"/runs/{w['imported'].pk}/",
        "rules": "/rules/",
        "rule-new-from-event": f"/rules/new/?from_event={w['mysql'].pk}",
        "rule-edit": f"/rules/{w['rule'].pk}/",
        "rules-import": "/rules/import/",
        "networks": "/networks/",
        "agents": "/agents/",
        "policies": "/policies/",
        "audit": "/audit/",
    }


def capture(browser, path) -> None:
    """The whole page, not only the visible part."""
    png = browser.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
    )["data"]
    path.write_bytes(base64.b64decode(png))


def console_errors(browser) -> list[str]:
    return [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def test_it_fits_every_page_in_390_and_800_px_without_sideways_scroll(
    chromium, live_server, users, crowded, tmp_path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    # PORTMON_SCREENSHOTS=DIR keeps them after the run (CI uploads them); else a tmp dir.
    shots = Path(os.environ.get("PORTMON_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    for old in shots.glob("*.png"):
        old.unlink()
    print(f"\nscreenshots: {shots}")

    chromium.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", WIDTHS[390])
    chromium.get(f"{live_server.url}/")
    assert "/accounts/login/" in chromium.current_url
    capture(chromium, shots / "390-login.png")
    chromium.find_element(By.NAME, "username").send_keys("admin")
    chromium.find_element(By.NAME, "password").send_keys(PASSWORD)
    chromium.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    WebDriverWait(chromium, 15).until(lambda b: "/accounts/login/" not in b.current_url)
    assert chromium.find_elements(By.LINK_TEXT, "Audit")  # in the menu for an admin

    too_wide, errors = [], []
    for width, metrics in WIDTHS.items():
        chromium.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        console_errors(chromium)  # drop what earlier pages logged
        for name, path in pages(crowded).items():
            chromium.get(f"{live_server.url}{path}")
            assert chromium.find_element(By.TAG_NAME, "h1").text, name
            inner, scroll = chromium.execute_script(
                "return [window.innerWidth, document.documentElement.scrollWidth]"
            )
            assert inner == width, f"{name}: the page is laid out {inner} px wide, not {width}"
            if scroll > inner:
                too_wide.append(f"{name} at {width} px: scrollWidth {scroll}")
            errors += [f"{name}: {m}" for m in console_errors(chromium)]
            capture(chromium, shots / f"{width}-{name}.png")
    # The overview of an installation that has not scanned yet: the first-run note.
    ScanRun.objects.all().delete()
    for width, metrics in WIDTHS.items():
        chromium.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        chromium.get(f"{live_server.url}/")
        assert "bin/pm scope add" in chromium.find_element(By.ID, "first-run").text
        inner, scroll = chromium.execute_script(
            "return [window.innerWidth, document.documentElement.scrollWidth]"
        )
        if scroll > inner:
            too_wide.append(f"first-run overview at {width} px: scrollWidth {scroll}")
        errors += [f"first-run: {m}" for m in console_errors(chromium)]
        capture(chromium, shots / f"{width}-overview-first-run.png")
    assert too_wide == []
    # A missing favicon, a stylesheet the CSP refuses, any 404 of the page's own assets.
    assert errors == []
    assert len(list(shots.glob("*.png"))) == 1 + 2 * (len(pages(crowded)) + 1)


def test_it_keeps_the_log_out_button_readable(chromium, live_server, users, world):
    """The header button was white text on the browser's light-grey button face."""
    from selenium.webdriver.common.by import By

    from tests.dashboard.test_browser import navigate_by

    chromium.get(f"{live_server.url}/accounts/login/")
    chromium.find_element(By.NAME, "username").send_keys("viewer")
    chromium.find_element(By.NAME, "password").send_keys(PASSWORD)
    navigate_by(chromium, chromium.find_element(By.CSS_SELECTOR, "form button[type=submit]"))
    button = chromium.find_element(By.CSS_SELECTOR, "form[action$='/accounts/logout/'] button")
    fg, bg, header = chromium.execute_script(
        """const s = getComputedStyle(arguments[0]);
        const h = getComputedStyle(arguments[0].closest('header'));
        return [s.color, s.backgroundColor, h.backgroundColor];""",
        button,
    )
    seen_bg = header if bg == "rgba(0, 0, 0, 0)" else bg
    assert contrast(fg, seen_bg) >= 4.5, (fg, bg, header)
    # A viewer sees no Audit link (the page is for admins); an admin does (other test).
    assert chromium.find_elements(By.LINK_TEXT, "Audit") == []


def contrast(a: str, b: str) -> float:
    """WCAG contrast ratio of two CSS rgb()/rgba() colours."""

    def lum(css: str) -> float:
        r, g, b = (int(float(x)) for x in css[css.index("(") + 1 : -1].split(",")[:3])
        ch = [c / 255 for c in (r, g, b)]
        ch = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in ch]
        return 0.2126 * ch[0] + 0.7152 * ch[1] + 0.0722 * ch[2]

    hi, lo = sorted((lum(a), lum(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)
