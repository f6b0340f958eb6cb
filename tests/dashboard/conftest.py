"""A small world for dashboard and API tests: users in each role, a network, hosts, ports,
a run with shards, and events of several kinds (created as the event path creates them)."""

import shutil
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.utils import timezone

from alerts.kinds import severity_for
from alerts.models import AlertEvent, EventAudit, Rule, open_key_for
from scanner.models import Host, Network, Port, ScanRun, ScanShard

PASSWORD = "correct horse battery staple"


def chromium_start(tmp_path, *, window: str | None = "1400,1000", implicit_wait: float = 5):
    """Headless Chromium through chromedriver, with its own profile in tmp_path and the
    browser console kept (console_errors reads it); the caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.fail(
            "chromium and chromium-driver are needed (apt-get install chromium "
            "chromium-driver; .ci/run installs them)"
        )
    options = webdriver.ChromeOptions()
    args = ["--headless", "--no-sandbox", "--disable-background-networking", "--disable-gpu",
            "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    if window:
        args.append(f"--window-size={window}")
    for arg in args:
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    options.binary_location = shutil.which("chromium")
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    if implicit_wait:
        driver.implicitly_wait(implicit_wait)
    return driver


def make_user(name: str, role: str | None) -> User:
    user = User.objects.create_user(name, f"{name}@example.com", PASSWORD)
    if role:
        # get_or_create: a transactional test's flush removes the migration's groups.
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


@pytest.fixture
def users(db):
    return {role: make_user(role, role) for role in ("viewer", "triager", "admin")} | {
        "nobody": make_user("nobody", None)
    }


def event(
    host, port, kind, *, at=None, run=None, rule=None, suppressed=False, detail=None, state="new"
) -> AlertEvent:
    at = at or timezone.now()
    e = AlertEvent.objects.create(
        host=host,
        proto="tcp",
        port=port,
        kind=kind,
        state=state,
        run=run,
        created_at=at,
        updated_at=at,
        detail=detail or {"zone": "internal"},
        rule=rule,
        suppressed=suppressed,
        severity=severity_for(kind, detail),
        immediate=kind == "high_risk",
        open_key=open_key_for(host.pk, "tcp", port, kind) if state == "new" else None,
    )
    EventAudit.objects.create(event=e, action="raised", to_state="new", at=at)
    return e


@pytest.fixture
def world(db):
    now = timezone.now()
    net = Network.objects.create(cidr="198.18.0.0/24", zone="internal", owner_email="a@x.org")
    other = Network.objects.create(cidr="198.18.1.0/24", zone="internal")
    a = Host.objects.create(ip="198.18.0.10", network=net)
    b = Host.objects.create(ip="198.18.1.20", network=other)
    run = ScanRun.objects.create(
        targets="198.18.0.0/23",
        ports="1-1024",
        state="finished",
        ports_found=3,
        hosts_found=2,
        created_at=now,
    )
    ScanShard.objects.create(
        run=run,
        index=0,
        targets="198.18.0.0/24",
        ports="1-1024",
        state="done",
        probes_total=10,
        probes_done=10,
        attempts=1,
    )
    ScanShard.objects.create(
        run=run,
        index=1,
        targets="198.18.1.0/24",
        ports="1-1024",
        state="failed",
        probes_total=10,
        attempts=3,
        error="killed",
    )
    Port.objects.create(host=a, port=22, service="ssh", product="OpenSSH", version="9.2")
    Port.objects.create(host=a, port=3306, service="mysql")
    Port.objects.create(host=b, port=8080, service="http")
    allow = Rule.objects.create(
        action="allow", ip_cidr="198.18.1.0/24", reason="lab web", owner="secops"
    )
    return {
        "net": net,
        "other": other,
        "a": a,
        "b": b,
        "run": run,
        "rule": allow,
        "ssh": event(a, 22, "new_port", run=run, at=now - timedelta(days=2)),
        "mysql": event(a, 3306, "high_risk", run=run),
        "web": event(b, 8080, "new_port", run=run, rule=allow, suppressed=True),
        "gone": event(b, 23, "closed", run=run, at=now - timedelta(days=1)),
    }


@pytest.fixture
def login(client):
    def as_(user):
        client.force_login(user)
        return client

    return as_
