"""Timeline fixtures: synthetic daily runs recorded through the scanner's run_import."""

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest

from alerts.models import AlertEvent
from alerts.services.diff import run_diff
from scanner.findings import Finding
from scanner.models import CoverageSpan, Network, RunState, ScanRun
from scanner.services.results import observations_record, run_counts_record, run_import
from scanner.signals import run_finished

# Day 0 is 10 June 2026; days 5, 6, 7 are the source's 15/16/17 June example.
DAY0 = datetime(2026, 6, 10, 2, 0, tzinfo=UTC)
NET = "198.18.0.0/24"
# Steady background: 5 hosts x 2 ports seen every day, so that one port more or less
# does not look like a degraded run, while a run reporting only a few ports does.
BACKGROUND = [
    Finding(f"198.18.0.{i}", p, service="ssh" if p == 22 else "http")
    for i in range(1, 6)
    for p in (22, 80)
]
HOST = "198.18.0.50"


def at(day: int) -> datetime:
    return DAY0 + timedelta(days=day)


class Timeline:
    """Imports one run per day; `day(n, *findings)` returns the run."""

    def __init__(self) -> None:
        self.runs: dict[int, ScanRun] = {}

    def day(self, n: int, *findings: Finding, background: bool = True, **kw) -> ScanRun:
        kw.setdefault("targets", NET)
        found = [*(BACKGROUND if background else []), *findings]
        if "ports" in kw:
            run = import_run(findings=found, at=at(n), **kw)
        else:
            run = run_import(findings=found, at=at(n), **kw)
        self.runs[n] = run
        return run

    def days(self, days, *findings: Finding, **kw) -> None:
        for n in days:
            self.day(n, *findings, **kw)

    def events(self, **filters) -> list[AlertEvent]:
        return list(AlertEvent.objects.filter(host__ip=HOST, **filters).order_by("id"))

    def kinds_on(self, n: int, ip: str = HOST) -> list[tuple[str, int]]:
        return sorted(
            AlertEvent.objects.filter(run=self.runs[n], host__ip=ip).values_list("kind", "port")
        )


def import_run(*, findings, at, targets, ports, send: bool = True) -> ScanRun:
    """run_import for a run that scanned only some ports (run_import scans all)."""
    run = ScanRun.objects.create(
        source=ScanRun.Source.IMPORT,
        targets=targets,
        ports=ports,
        state=RunState.FINGERPRINTING,
        created_at=at,
        started_at=at,
    )
    observations_record(run_id=run.id, findings=findings, seen_at=at)
    ScanRun.objects.filter(pk=run.pk).update(finished_at=at, state=RunState.FINISHED)
    run.refresh_from_db()
    run_counts_record(run=run)
    if send:
        run_finished.send(sender=ScanRun, run_id=run.id)
    run.refresh_from_db()
    return run


@pytest.fixture
def lab_network(db) -> Network:
    # Baselined before day 0: these timelines are about what a run after the baseline says
    # (the first run's baseline has tests of its own in test_baseline.py).
    network = Network.objects.create(
        cidr=NET,
        zone="internal",
        owner_email="owner@example.com",
        baselined_at=DAY0 - timedelta(days=30),
    )
    network_covered(network, at=DAY0 - timedelta(days=30))
    return network


def network_covered(network: Network, *, at: datetime, ports: str = "1-65535") -> None:
    """A healthy run covered all of the network's addresses and these ports at `at`."""
    cidr = ipaddress.ip_network(network.cidr)
    addresses = f"{int(cidr.network_address)}-{int(cidr.broadcast_address)}"
    CoverageSpan.objects.create(network=network, at=at, addresses=addresses, ports=ports)


def _diff_now(sender, run_id: int, **kwargs) -> None:
    run_diff(run_id=run_id)


@pytest.fixture
def timeline(lab_network):
    """Each run the scanner finishes is diffed at once.

    In the product a worker diffs it after the scanner's transaction commits
    (tests/alerts/test_wiring.py); these tests run in one transaction that never commits,
    and are about what the diff says, so the fixture stands in for that worker.
    """
    run_finished.connect(_diff_now, dispatch_uid="tests.timeline_diff_now")
    try:
        yield Timeline()
    finally:
        run_finished.disconnect(dispatch_uid="tests.timeline_diff_now")


def port(n: int, **fp) -> Finding:
    return Finding(HOST, n, **fp)
