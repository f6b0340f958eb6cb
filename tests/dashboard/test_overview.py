"""The overview answers "what is new and dangerous": the top open high/critical events with
their age, ageing against per-severity targets, exposure per network, SVG trend charts."""

import re
from datetime import timedelta

from django.core.cache import cache
from django.test import override_settings
from django.utils import timezone

from alerts.models import AlertEvent, EventAudit
from alerts.services.events import events_transition
from dashboard import charts
from scanner.models import Host, Network, Port, ScanRun
from tests.dashboard.conftest import event


def rows_of(html: str, table_id: str) -> list[list[str]]:
    """The text of each body row of a table, cell by cell (tags stripped)."""
    table = re.search(rf'<table id="{table_id}">(.*?)</table>', html, re.S).group(1)
    body = table.split("<tbody>", 1)[1]
    return [
        [
            re.sub(r"<[^>]+>", "", cell).strip()
            for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        ]
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)
    ]


def test_it_shows_the_newest_dangerous_events_first_with_their_age(login, users, world):
    now = timezone.now()
    old_crit = event(world["a"], 9999, "poc_finding", at=now - timedelta(days=3),
                     detail={"severity": "critical", "product": "Redis"})  # fmt: skip
    page = login(users["viewer"]).get("/").content.decode()
    section = page.split('id="dangerous"', 1)[1].split("</section>", 1)[0]
    # Critical before high; each with its age; medium (ssh) and suppressed events left out.
    assert section.index(f"/events/{old_crit.pk}/") < section.index(f"/events/{world['mysql'].pk}/")
    assert ">3 d<" in section and ">0 min<" in section
    assert f"/events/{world['ssh'].pk}/" not in section
    assert "All 2 open high and critical events" in section


def test_it_links_each_severity_to_exactly_that_severity(login, users, world):
    """ "medium 2" opened 3 rows (the link meant "medium or worse")."""
    c = login(users["viewer"])
    page = c.get("/").content.decode()
    link = re.search(r'href="(/events/\?[^"]*severity=medium[^"]*)">(\d+)</a>', page)
    assert link, page
    url, shown = link.group(1).replace("&amp;", "&"), int(link.group(2))
    listed = c.get(url).context["page"].paginator.count
    assert shown == listed == 1  # ssh (medium); not mysql (high)
    # The events page's filter form keeps the upper bound: "Filter" again lists the same.
    form = c.get(url).content.decode().split('id="filters"', 1)[1].split("</form>", 1)[0]
    assert re.search(r'<select name="severity_max">.*?<option value="medium" selected>', form, re.S)
    api = c.get("/api/events/?state=open&severity=medium&severity_max=medium&suppressed=no").json()
    assert {e["id"] for e in api["results"]} == {world["ssh"].pk}


def test_it_counts_overdue_events_against_the_target_of_their_severity(login, users, world):
    now = timezone.now()
    # Targets: high 3 days, medium 14. A high event 4 days old is overdue; the medium ones
    # (2 days and 20 days) split.
    AlertEvent.objects.filter(pk=world["mysql"].pk).update(created_at=now - timedelta(days=4))
    event(world["a"], 4444, "new_port", at=now - timedelta(days=20))
    with override_settings(PORTMON_TARGET_DAYS={"critical": 1, "high": 3, "medium": 14, "low": 30}):
        page = login(users["viewer"]).get("/").content.decode()
    rows = {r[0]: r for r in rows_of(page, "open-by-severity")}
    assert rows["high"] == ["high", "1", "4 days", "3 days", "1"]
    assert rows["medium"] == ["medium", "2", "20 days", "14 days", "1"]
    assert rows["critical"] == ["critical", "0", "none open", "1 day", "0"]
    assert rows["low"][1] == "1"  # the closed event; 1 day old, within 30


def test_it_shows_exposure_per_network_by_service_even_for_10000_ports(login, users, world):
    net = Network.objects.create(cidr="198.19.0.0/16", zone="external")
    hosts = Host.objects.bulk_create(
        [Host(ip=f"198.19.{i // 250}.{i % 250 + 1}", network=net) for i in range(500)]
    )
    Port.objects.bulk_create(
        [
            Port(host=h, port=p, service="http" if p % 2 else f"svc-{p}<b>")
            for h in hosts
            for p in range(1, 21)
        ]
    )
    page = login(users["viewer"]).get("/").content.decode()
    section = page.split('id="exposure"', 1)[1].split("</section>", 1)[0]
    first = section.split("<tbody>", 1)[1].split("</tr>", 1)[0]
    assert "198.19.0.0/16" in first and "<td>10000</td>" in first
    assert "http 5000" in first and "&lt;b&gt;" in first and "<b>" not in first
    assert "other" in first  # 6 services shown, the rest summed
    assert "198.18.0.0/24" in section  # the small network still listed
    assert page.count("open port") and "10003 open ports" in page


def test_it_tells_a_first_run_what_to_do_and_draws_empty_charts(login, users, db):
    page = login(users["viewer"]).get("/").content.decode()
    assert 'id="first-run"' in page
    assert "No open high or critical event." in page
    assert "No open port recorded yet." in page
    assert page.count('<svg class="chart"') == 1  # events: 14 days of zeros
    assert ">none</text>" in page
    assert "Open ports found per finished run" in page and "No data yet." in page


def test_it_draws_a_chart_of_one_point_and_of_only_zeros():
    one = charts.lines("ports", ["06 Dec"], [("nightly", [42])])
    assert one.count("<circle") == 1 and "<polyline" not in one and ">50</text>" in one
    zeros = charts.stacked_bars("events", ["a", "b"], [("high", [0, 0])])
    assert "<rect" not in zeros and ">none</text>" in zeros and ">1</text>" in zeros
    hostile = charts.lines('<script>"', ["<x>"], [("<img src=x>", [1, 2])])  # one too many
    assert "<script>" not in hostile and "<img" not in hostile and "&lt;x&gt;" in hostile


def test_it_draws_one_line_per_policy_not_one_mixed_line(login, users, world):
    from scanner.models import ScanPolicy

    nightly = ScanPolicy.objects.create(name="nightly", targets="198.18.0.0/24", ports="1-1024")
    now = timezone.now()
    for d, (policy, found) in enumerate([(nightly, 10), (None, 500), (nightly, 12)]):
        ScanRun.objects.create(targets="x", state="finished", policy=policy, ports_found=found,
                               created_at=now - timedelta(hours=3 - d))  # fmt: skip
    page = login(users["viewer"]).get("/").content.decode()
    figure = page.split('id="chart-runs"', 1)[1].split("</figure>", 1)[0]
    assert figure.count("<polyline") == 2  # nightly (2 runs) and ad hoc (the world's + 1)
    assert "nightly" in figure and "ad hoc" in figure


def test_it_caches_the_counts_until_an_event_or_a_triage_step(login, users, world):
    cache.clear()
    c = login(users["triager"])
    with override_settings(PORTMON_OVERVIEW_CACHE_SECONDS=60):

        def medium() -> str:
            rows = rows_of(c.get("/").content.decode(), "open-by-severity")
            return {r[0]: r for r in rows}["medium"][1]

        assert medium() == "1"
        event(world["a"], 5555, "new_port")  # a new event: counted at once
        assert medium() == "2"
        events_transition(
            event_ids=[world["ssh"].pk], to_state="acknowledged", actor=users["triager"]
        )
        assert EventAudit.objects.filter(event=world["ssh"], actor=users["triager"]).exists()
        assert medium() == "2"  # acknowledged is still open
        events_transition(event_ids=[world["ssh"].pk], to_state="fixed", actor=users["triager"])
        assert medium() == "1"


def test_it_reads_an_upper_bound_on_severity_and_reports_a_bad_one():
    from django.http import QueryDict

    from alerts.filters import event_filters_parse

    f = event_filters_parse(QueryDict("severity=medium&severity_max=medium"))
    assert (f.severity, f.severity_max, f.errors) == (20, 20, ())
    bad = event_filters_parse(QueryDict("severity_max=<b>worst"))
    assert bad.severity_max is None and bad.errors == (
        "severity_max: '<b>worst' is not a severity",
    )
