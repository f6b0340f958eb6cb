"""The events and hosts lists and the CSV read in pages (bench/dashboard_bench.py measures them at
100,000 events): every event exactly once, in order, whatever the page boundaries."""

import csv
import io
import re

import pytest
from django.utils import timezone

from alerts import selectors
from scanner.models import Host, Port

from .conftest import event


def test_it_exports_every_event_once_across_csv_pages_with_equal_times(
    login, users, world, monkeypatch
):
    monkeypatch.setattr(selectors, "CSV_PAGE", 3)
    same = timezone.now()
    made = [event(world["a"], 4000 + i, "new_port", at=same).pk for i in range(7)]
    response = login(users["viewer"]).get("/events/export.csv?port=&kind=new_port")
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))[1:]
    ids = [int(r[0]) for r in rows]
    assert len(ids) == len(set(ids)) == 7 + 2  # and the world's two new_port events
    assert ids[:7] == sorted(made, reverse=True)
    assert {r[2] for r in rows[:7]} == {"198.18.0.10"}


def test_it_pages_the_events_list_with_each_row_complete(login, users, world):
    for i in range(60):
        event(world["b"], 5000 + i, "closed", rule=world["rule"])
    client = login(users["viewer"])
    first = client.get("/events/").context["page"]
    second = client.get("/events/?page=2").context["page"]
    assert first.paginator.count == 64 and len(first.object_list) == 50
    shown = [r.event.pk for r in first.object_list] + [r.event.pk for r in second.object_list]
    assert len(set(shown)) == 64
    assert "198.18.1.20" in client.get("/events/?page=2").content.decode()


@pytest.mark.parametrize(
    ("cidr", "expected"),
    [
        ("198.18.0.0/23", {"198.18.0.10", "198.18.1.20", "198.18.1.200"}),
        ("198.18.1.0/24", {"198.18.1.20", "198.18.1.200"}),
        ("198.18.1.16/28", {"198.18.1.20"}),
        ("198.18.1.20/31", {"198.18.1.20"}),
        ("198.18.1.2/32", set()),
        ("198.16.0.0/14", {"198.18.0.10", "198.18.1.20", "198.18.1.200"}),
        ("0.0.0.0/0", {"198.18.0.10", "198.18.1.20", "198.18.1.200", "198.180.1.2"}),
        ("2001:db8::/32", {"2001:db8::5"}),
    ],
)
def test_it_filters_events_by_any_cidr_and_never_by_text_alone(login, users, world, cidr, expected):
    # 198.18.1.200 and 198.180.1.2 start with the text of 198.18.1.2 and 198.18.
    for ip in ("198.18.1.200", "198.180.1.2", "2001:db8::5"):
        event(Host.objects.create(ip=ip), 80, "new_port")
    page = login(users["viewer"]).get("/events/", {"host": cidr}).context["page"]
    assert {r.event.host.ip for r in page.object_list} == expected


def test_the_hosts_list_counts_the_open_ports_of_the_hosts_on_each_page(login, users, world):
    extra = Host.objects.bulk_create([Host(ip=f"198.18.9.{i}") for i in range(100, 160)])
    for host, n in zip(extra[-3:], (1, 2, 0), strict=True):
        Port.objects.bulk_create(
            [Port(host=host, port=22 + i, state="open") for i in range(n)]
            + [Port(host=host, port=9000, state="closed")]
        )
    response = login(users["viewer"]).get("/hosts/?page=2")
    counts = {r.host.ip: r.open_ports for r in response.context["page"].object_list}
    assert [counts[f"198.18.9.{i}"] for i in (157, 158, 159)] == [1, 2, 0]
    assert response.context["page"].paginator.count == Host.objects.count()
    row = re.search(r"198\.18\.9\.158</a></td>(.*?)</tr>", response.content.decode()).group(1)
    assert "<td>2</td>" in row
