"""Every internal exposure a live scan finds gets its PoC checks once, baseline included;
imports (unless --poc), external networks and ports chaining handles get none from it."""

from datetime import UTC, datetime, timedelta

import pytest

from alerts.services.diff import run_diff
from poc.models import PocCheck
from poc.services.chain import pocs_cover
from scanner.findings import Finding
from scanner.models import Network, ScanRun
from scanner.services.results import run_import

DAY = datetime(2026, 6, 15, 8, 0, tzinfo=UTC)
REDIS = [Finding("198.18.0.5", 16379, service="redis"), Finding("198.18.0.6", 22, service="ssh")]


def scan(findings, *, at=DAY, probes_allowed=True) -> ScanRun:
    run = run_import(
        findings=findings, at=at, targets="198.18.0.0/24", probes_allowed=probes_allowed
    )
    run_diff(run_id=run.pk)
    run.refresh_from_db()
    return run


@pytest.fixture
def internal(db):
    return Network.objects.create(cidr="198.18.0.0/24", zone="internal")


def test_it_checks_a_first_scan_s_exposures_once(internal):
    run = scan(REDIS)
    assert run.baseline  # a baseline: no event, so nothing was chained
    [check_id] = pocs_cover(run_id=run.pk)
    check = PocCheck.objects.get(pk=check_id)
    assert (check.host.ip, check.port, check.check_name, check.reason) == (
        "198.18.0.5", 16379, "redis_noauth", "cover"
    )  # fmt: skip
    # Seen again the next day: checked already, nothing new to do.
    again = scan(REDIS, at=DAY + timedelta(days=1))
    assert pocs_cover(run_id=again.pk) == []


def test_it_leaves_imports_and_external_networks_alone(internal):
    assert pocs_cover(run_id=scan(REDIS, probes_allowed=False).pk) == []
    Network.objects.filter(pk=internal.pk).update(zone="external")
    assert pocs_cover(run_id=scan(REDIS, at=DAY + timedelta(days=1)).pk) == []
    assert not PocCheck.objects.exists()


def test_it_leaves_ports_with_a_chained_event_to_chaining(internal):
    scan(REDIS)  # the baseline; its exposure (not covered yet) is left for the next run
    later = DAY + timedelta(days=10)
    run = scan([*REDIS, Finding("198.18.0.7", 16379, service="redis")], at=later)
    # 198.18.0.7 is a new_port event: poc.chain queues its check with the event.
    assert run.observations.count() == 3
    assert [c.host.ip for c in PocCheck.objects.filter(pk__in=pocs_cover(run_id=run.pk))] == [
        "198.18.0.5"
    ]
