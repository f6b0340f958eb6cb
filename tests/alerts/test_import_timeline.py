"""Timelines through scan_import of nmap XML files: hosts vanish from the file, come back.

Each day is a file written as nmap writes it (tests/alerts/nmapxml.py) and imported with
manage.py scan_import; the diff runs at once (as the worker would after commit).
"""

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from alerts.models import AlertEvent
from scanner.models import Network, Port, ScanRun
from scanner.signals import run_finished
from tests.alerts.conftest import NET, _diff_now, at
from tests.alerts.nmapxml import nmap_xml

HOST = "198.18.0.50"
SSH, WEB = (22, "ssh", "OpenSSH"), (8080, "http", "nginx")
# Five steady hosts: a day without HOST is not a run that found "far fewer" ports.
BACKGROUND = {f"198.18.0.{i}": [SSH, (80, "http", "nginx")] for i in range(1, 6)}


class Days:
    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.runs: dict[int, ScanRun] = {}

    def day(self, n, hosts=None, *, targets=NET, ports="1-65535", down=(), args=()):
        path = self.tmp_path / f"day{n}.xml"
        content = nmap_xml(
            targets=targets, ports=ports, hosts={**BACKGROUND, **(hosts or {})}, down=down
        )
        path.write_text(content)
        call_command("scan_import", str(path), "--at", at(n).isoformat(), *args, stdout=StringIO())
        self.runs[n] = ScanRun.objects.latest("id")
        return self.runs[n]

    def kinds(self, ip=HOST) -> dict[int, list[tuple[str, int]]]:
        """{day: [(kind, port)]} of the events raised for one host."""
        days = {run.pk: n for n, run in self.runs.items()}
        found: dict[int, list] = {}
        for run_id, kind, port in AlertEvent.objects.filter(host__ip=ip).values_list(
            "run_id", "kind", "port"
        ):
            found.setdefault(days[run_id], []).append((kind, port))
        return {n: sorted(v) for n, v in sorted(found.items())}


@pytest.fixture
def days(db, tmp_path):
    Network.objects.create(cidr=NET, zone="internal", owner_email="owner@example.com")
    run_finished.connect(_diff_now, dispatch_uid="tests.import_timeline_diff_now")
    try:
        yield Days(tmp_path)
    finally:
        run_finished.disconnect(dispatch_uid="tests.import_timeline_diff_now")


def test_it_closes_the_ports_of_a_host_that_vanished_from_the_file_after_3_runs(days):
    days.day(0, {HOST: [SSH, WEB]})
    days.day(1)
    days.day(2)
    assert set(Port.objects.filter(host__ip=HOST).values_list("state", "missed_runs")) == {
        ("open", 2)
    }
    days.day(3)
    assert set(Port.objects.filter(host__ip=HOST).values_list("state", flat=True)) == {"closed"}
    # Day 0 is the network's baseline: nothing announced, then the two ports close.
    assert days.kinds() == {3: [("closed", 22), ("closed", 8080)]}


def test_it_reopens_a_port_that_comes_back_after_it_closed(days):
    # The timeline: open on days 3-4, gone 5-7, back on 8.
    days.day(0)
    days.day(1)
    days.day(2)
    days.day(3, {HOST: [WEB]})
    days.day(4, {HOST: [WEB]})
    for n in (5, 6, 7):
        days.day(n)
    days.day(8, {HOST: [WEB]})
    # Day 3: a new host in a baselined network is news.
    assert days.kinds() == {
        3: [("new_port", 8080)],
        7: [("closed", 8080)],
        8: [("reopened", 8080)],
    }


def test_it_raises_nothing_for_a_one_day_miss(days):
    days.day(0, {HOST: [SSH, WEB]})
    days.day(1)
    days.day(2, {HOST: [SSH, WEB]})
    days.day(3, {HOST: [SSH, WEB]})
    assert days.kinds() == {}
    assert set(Port.objects.filter(host__ip=HOST).values_list("state", "missed_runs")) == {
        ("open", 0)
    }


def test_it_does_not_close_ports_a_file_did_not_scan(days):
    days.day(0, {HOST: [SSH, WEB]})
    for n in (1, 2, 3, 4):
        days.day(n, {HOST: [SSH]}, ports="22,80")
    assert days.runs[1].ports == "22,80"
    assert Port.objects.get(host__ip=HOST, port=8080).state == "open"
    assert days.kinds() == {}


def test_it_covers_the_hosts_a_file_lists_up_or_down_when_its_command_line_does_not_say(days):
    gone_quietly = "198.18.0.51"
    days.day(0, {HOST: [WEB], gone_quietly: [WEB]}, targets=None)
    for n in (1, 2, 3):
        # HOST is listed down; gone_quietly is not in the file at all.
        days.day(n, targets=None, down=[HOST])
    assert HOST in days.runs[1].targets.split(",")
    assert gone_quietly not in days.runs[1].targets.split(",")
    assert days.kinds() == {3: [("closed", 8080)]}
    assert days.kinds(gone_quietly) == {}
    assert Port.objects.get(host__ip=gone_quietly).state == "open"


def test_it_refuses_a_masscan_import_without_targets(days, tmp_path):
    path = tmp_path / "masscan.json"
    path.write_text(
        '[\n{"ip": "198.18.0.5", "ports": [{"port": 22, "proto": "tcp", "status": "open"}]}\n]\n'
    )
    with pytest.raises(CommandError, match="masscan file does not say what it scanned"):
        call_command("scan_import", str(path))
    assert not ScanRun.objects.exists()

    call_command("scan_import", str(path), "--targets", NET, "--ports", "1-1024", stdout=StringIO())
    run = ScanRun.objects.get()
    assert (run.targets, run.ports) == (NET, "1-1024")


def test_it_keeps_the_file_s_targets_inside_the_scope(days):
    run = days.day(0, targets="198.18.0.0/16 203.0.113.0/24")
    assert run.targets == NET


def test_it_records_ports_covered_for_the_first_time_as_baseline(days):
    days.day(0, {HOST: [SSH]}, ports="22")
    # The port range grows: 8080 was never scanned before, so it is not news.
    run = days.day(1, {HOST: [SSH, WEB]})
    assert run.baseline == [
        {"network_id": run.baseline[0]["network_id"], "network": NET, "ports": 1, "hosts": 1}
    ]
    # Newly covered ports are learnt for the new-port window (3 days): a port missed by the
    # first scan that covered it is not news the day after.
    days.day(2, {HOST: [SSH, WEB, (9090, "http", "Jetty")]})
    days.day(3, {HOST: [SSH, WEB, (9090, "http", "Jetty")]})
    # Then a port opening inside the coverage is news.
    days.day(4, {HOST: [SSH, WEB, (9090, "http", "Jetty"), (9443, "https", "Jetty")]})
    assert days.kinds() == {4: [("new_port", 9443)]}
