"""The whole chain on real processes: a lab scan through real workers finds a new Redis
without a password; with no manual step the PoC worker proves it, a poc_finding event with
evidence exists, and the immediate alert reaches a real SMTP server."""

import time

import pytest
from django.core.management import call_command

from alerts.models import AlertEvent, EventKind
from poc.models import PocResult
from scanner.models import RunState
from scanner.services.runs import run_start
from tests.alerts.notify.conftest import SmtpServer, free_port
from tests.lab import Lab
from tests.poc.daemons import Daemon
from tests.scanner.test_pipeline import wait_run

OWNER = "lab-owner@example.com"


def wait_for(predicate, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"no {what} after {seconds:.0f}s")


@pytest.mark.lab
@pytest.mark.celery
def test_it_proves_a_new_open_redis_found_by_a_scan_and_alerts_at_once(celery_workers, tmp_path):
    from alerts.models import HighRiskPort

    # The product's high-risk list is migration data, which an earlier transactional
    # test's flush removed: this test states the one it relies on.
    HighRiskPort.objects.get_or_create(proto="tcp", port=6379)
    smtp = SmtpServer(free_port())
    smtp.start()
    tmp_path.chmod(0o755)
    env = {
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(smtp.port),
        "PORTMON_POC_CHECK_TIMEOUT": "5",
    }
    try:
        with Lab(hosts=1, ports_per_host=(0, 0), seed=21) as lab:
            [ip] = lab.hosts
            redis = Daemon(
                lab.namespace,
                ["redis-server", "--bind", ip, "--port", "6379", "--protected-mode", "no",
                 "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                ip, 6379, tmp_path / "redis.log",
            ).start()  # fmt: skip
            try:
                call_command("scope", "add", lab.cidr, "--zone", "internal", "--owner", OWNER)
                # Beat first: the every-minute sender is what delivers immediate alerts.
                celery_workers.start_beat(extra_env=env)
                celery_workers.start("sweep", "sweep.internal", extra_env=env)
                celery_workers.start("general", "fingerprint,default", 2, extra_env=env)
                celery_workers.start("poc", "poc", extra_env=env)

                run = run_start(targets=[ip], ports="6379,6380", engine="connect")
                assert wait_run(run.pk, 120).state == RunState.FINISHED

                event = wait_for(
                    lambda: AlertEvent.objects.filter(kind=EventKind.POC_FINDING).first(),
                    90, "poc_finding event",
                )  # fmt: skip
                [mail] = wait_for(
                    lambda: [m for m in smtp.to(OWNER) if "finding" in m["Subject"].lower()],
                    100, "immediate alert email for the finding",
                )  # fmt: skip
            finally:
                redis.stop()
            assert sum(lab.egress_drops().values()) == 0
    finally:
        smtp.stop()

    assert event.host.ip == ip and event.port == 6379 and event.immediate
    assert event.detail["check"] == "redis_noauth" and event.detail["severity"] == "high"
    assert "redis_version:" in event.detail["evidence"]
    result = PocResult.objects.get(event=event)
    assert result.vulnerable and result.run.reason == "chain"
    assert result.run.event.kind == "high_risk"  # chained from the scan's own event
    assert f"{ip}:6379/tcp" in mail["Subject"]
    assert "Redis answers INFO without authentication" in mail["Subject"]
    assert "(high))" not in mail["Subject"]
    assert "poc.run_check" in celery_workers.log("poc")
