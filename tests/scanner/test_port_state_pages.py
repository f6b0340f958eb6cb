"""The diff folds the port state page by page: same result as one pass, whatever the page size."""

from datetime import UTC, datetime, timedelta

import pytest

from scanner.findings import Finding
from scanner.models import Port
from scanner.services import ports, results

DAY = datetime(2026, 6, 15, 8, 0, tzinfo=UTC)


@pytest.mark.django_db
def test_it_counts_and_fingerprints_every_port_across_pages(monkeypatch, diff_on_finish):
    monkeypatch.setattr(ports, "PORTS_ADVANCE_PAGE", 3)
    found = [Finding(f"198.18.0.{h}", p) for h in range(1, 5) for p in (22, 80)]
    results.run_import(findings=found, at=DAY)
    second = results.run_import(
        findings=[*found[:5], Finding("198.18.0.1", 22, service="ssh"), Finding("198.18.0.9", 443)],
        at=DAY + timedelta(days=1),
    )
    assert (second.hosts_found, second.ports_found) == (4, 6)
    assert sorted(Port.objects.values_list("seen_count", flat=True)) == [1, 1, 1, 1, 2, 2, 2, 2, 2]
    assert Port.objects.get(host__ip="198.18.0.1", port=22).service == "ssh"
    assert Port.objects.get(host__ip="198.18.0.9").first_seen == DAY + timedelta(days=1)
