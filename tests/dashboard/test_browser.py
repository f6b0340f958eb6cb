"""Headless Chromium against a live server: the morning triage path, end to end."""

import pytest
from django.utils import timezone

from alerts.models import AlertEvent, Rule
from tests.dashboard.conftest import PASSWORD, chromium_start

# A live server thread sees only committed rows. The role groups (migration data) that an
# earlier transactional test's flush removed are put back by the `users` fixture; not
# serialized_rollback, which collides with the content types that flush recreates.
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def browser(tmp_path):
    driver = chromium_start(tmp_path)
    yield driver
    driver.quit()


def page_gone(element):
    """A wait condition: element's page has been replaced. selenium's staleness_of, plus the
    form this Chromium sometimes reports it in: a plain WebDriverException "Node with given
    id does not belong to the document" instead of a StaleElementReferenceException."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    def gone(_browser) -> bool:
        try:
            element.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as exc:
            if "does not belong to the document" in (exc.msg or ""):
                return True
            raise
        return False

    return gone


def navigate_by(browser, element) -> None:
    """Click something that loads a new page and wait for it: reading the old page's
    elements while the new one loads fails at random ("node does not belong to the document")."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    old = browser.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(browser, 15).until(page_gone(old))
    WebDriverWait(browser, 15).until(
        lambda b: b.execute_script("return document.readyState") == "complete"
    )


def log_in(browser, live_server, name, next_path="/"):
    from selenium.webdriver.common.by import By

    browser.get(f"{live_server.url}{next_path}")
    assert "/accounts/login/" in browser.current_url
    browser.find_element(By.NAME, "username").send_keys(name)
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    navigate_by(browser, browser.find_element(By.CSS_SELECTOR, "form button[type=submit]"))


def shot(browser, tmp_path, name):
    path = tmp_path / f"{name}.png"
    browser.save_screenshot(str(path))
    assert path.stat().st_size > 1000


def test_it_triages_an_event_from_a_digest_link(
    browser, live_server, users, world, tmp_path, settings
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from alerts.services.events import Candidate, events_raise

    mysql = world["mysql"]
    # The digest links to SITE_URL + get_absolute_url(): follow one such link.
    link = f"{live_server.url}{mysql.get_absolute_url()}"
    browser.get(link)
    assert "/accounts/login/" in browser.current_url  # anonymous: to the login page first
    shot(browser, tmp_path, "login")
    log_in(browser, live_server, "admin", mysql.get_absolute_url())
    assert browser.current_url == link
    assert "high-risk port on 198.18.0.10 3306/tcp" in browser.find_element(By.TAG_NAME, "h1").text
    shot(browser, tmp_path, "event")

    Select(browser.find_element(By.CSS_SELECTOR, "#triage select")).select_by_value("acknowledged")
    browser.find_element(By.CSS_SELECTOR, "#triage textarea").send_keys("DBA is on it")
    navigate_by(browser, browser.find_element(By.CSS_SELECTOR, "#triage button"))
    assert browser.find_element(By.ID, "state").text == "acknowledged"
    assert "DBA is on it" in browser.find_element(By.ID, "notes").text
    assert "admin" in browser.find_element(By.ID, "audit").text

    navigate_by(browser, browser.find_element(By.ID, "allow-rule"))
    assert browser.find_element(By.NAME, "ip_cidr").get_attribute("value") == "198.18.0.10"
    owner = browser.find_element(By.NAME, "owner")
    assert owner.get_attribute("value") == "a@x.org"  # the network's owner
    owner.clear()
    owner.send_keys("dba team")
    navigate_by(browser, browser.find_element(By.CSS_SELECTOR, "button[name=preview]"))
    assert "1 open event match" in browser.find_element(By.TAG_NAME, "h2").text
    assert "1 event of the last 7 days match" in browser.find_element(By.ID, "dry-run").text
    shot(browser, tmp_path, "rule-dry-run")
    navigate_by(browser, browser.find_element(By.CSS_SELECTOR, "button[name=save]"))
    rule = Rule.objects.get(owner="dba team")
    assert browser.find_element(By.ID, "state").text == "ignored"  # resolved by the rule
    browser.get(f"{live_server.url}/rules/")
    assert browser.find_element(By.ID, f"rule-{rule.pk}")
    shot(browser, tmp_path, "rules")

    # The port closes and comes back: the identical event is now kept but suppressed.
    AlertEvent.objects.filter(pk=mysql.pk).update(state="fixed", open_key=None)
    events_raise(
        candidates=[
            Candidate(
                world["a"].pk, "198.18.0.10", "internal", "tcp", 3306, "high_risk", immediate=True
            )
        ],
        at=timezone.now(),
    )
    browser.get(f"{live_server.url}/events/?port=3306&suppressed=yes")
    assert f"suppressed by rule #{rule.pk}" in browser.find_element(By.ID, "events").text
    for page in ("", "hosts/198.18.0.10/", f"runs/{world['run'].pk}/", "events/"):
        browser.get(f"{live_server.url}/{page}")
        shot(browser, tmp_path, "page-" + (page.strip("/").replace("/", "-") or "overview"))


def test_it_refuses_a_state_change_to_a_viewer(browser, live_server, users, world, tmp_path):
    from selenium.webdriver.common.by import By

    log_in(browser, live_server, "viewer", "/events/")
    assert browser.find_elements(By.ID, "bulk") == []  # no triage controls for a viewer
    # A hand-made form post (the page offers none) is refused too.
    from selenium.webdriver.support.ui import WebDriverWait

    page = browser.find_element(By.TAG_NAME, "html")
    browser.execute_script(
        """const f = document.createElement('form'); f.method = 'post';
        f.action = arguments[0];
        for (const [k, v] of [['to_state', 'ignored'],
              ['csrfmiddlewaretoken', document.cookie.match(/csrftoken=([^;]+)/)[1]]]) {
            const i = document.createElement('input'); i.name = k; i.value = v; f.appendChild(i);
        }
        document.body.appendChild(f); f.submit();""",
        f"/events/{world['ssh'].pk}/transition/",
    )
    WebDriverWait(browser, 15).until(page_gone(page))
    assert "Not allowed" in browser.find_element(By.TAG_NAME, "h1").text
    shot(browser, tmp_path, "viewer-403")
    assert AlertEvent.objects.get(pk=world["ssh"].pk).state == "new"
