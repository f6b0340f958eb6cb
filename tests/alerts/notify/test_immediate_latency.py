"""Immediate alerts leave when the diff commits, not at the sender's next minute tick."""

import time

import pytest
from django.utils import timezone

from scanner.findings import Finding
from scanner.models import Network
from scanner.services.results import run_import
from tests.alerts.notify.conftest import SITE


# transaction=True: the worker needs committed rows. The seeded high-risk list is migration
# data that an earlier transactional test's flush may have removed: the test states its port
# (serialized_rollback would collide with the content types that flush recreates).
@pytest.mark.celery
@pytest.mark.django_db(transaction=True)
def test_it_delivers_an_immediate_alert_within_5_seconds_of_the_diff(celery_workers, smtp):
    from alerts.models import HighRiskPort

    HighRiskPort.objects.get_or_create(proto="tcp", port=6379)
    Network.objects.create(cidr="198.18.1.0/24", zone="internal", owner_email="alice@example.com")
    # One real worker on the default queue: it diffs, then sends. No beat, so no minute tick.
    celery_workers.start(
        "general",
        "default",
        extra_env={
            "EMAIL_HOST": "127.0.0.1",
            "EMAIL_PORT": str(smtp.port),
            "PORTMON_DIGEST_RECIPIENTS": "",
            "SITE_URL": SITE,
        },
    )

    run = run_import(
        findings=[Finding("198.18.1.5", 6379, service="redis")],
        at=timezone.now(),
        targets="198.18.1.0/24",
    )
    deadline = time.monotonic() + 60
    while not smtp.to("alice@example.com"):
        assert time.monotonic() < deadline, celery_workers.log("general")[-3000:]
        time.sleep(0.02)
    received = time.time()

    run.refresh_from_db()
    # diffed_at is stamped when the diff starts: this bounds commit -> SMTP from above.
    delay = received - run.diffed_at.timestamp()
    print(f"diff start -> SMTP server received: {delay:.2f} s")
    assert delay < 5, celery_workers.log("general")[-3000:]
    [mail] = smtp.to("alice@example.com")
    assert mail["Subject"].startswith("[Portmon] High-risk port: 198.18.1.5:6379/tcp")
    assert "Traceback" not in celery_workers.log("general")
