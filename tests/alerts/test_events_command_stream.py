"""events --json streams pages of events instead of building the whole list in memory."""

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext

from alerts.management.commands import events as events_command
from alerts.models import AlertEvent, open_key_for
from scanner.models import Host
from tests.alerts.conftest import DAY0


class QueryStampedOutput(StringIO):
    """Notes how many queries had run at each write: shows writes between page reads."""

    def __init__(self, queries: CaptureQueriesContext):
        super().__init__()
        self.queries = queries
        self.stamps: list[int] = []

    def write(self, text: str) -> int:
        self.stamps.append(len(self.queries.captured_queries))
        return super().write(text)


@pytest.fixture
def many_events(db):
    host = Host.objects.create(ip="198.18.0.9")
    # Three timestamps only: a diff creates a run's events at one time, so pages must be
    # split inside a run of equal created_at without losing or repeating an event.
    AlertEvent.objects.bulk_create(
        AlertEvent(
            host=host,
            proto="tcp",
            port=port,
            kind="new_port",
            created_at=DAY0 + timedelta(hours=port % 3),
            open_key=open_key_for(host.pk, "tcp", port, "new_port"),
        )
        for port in range(1, 2001)
    )


def test_it_streams_all_events_as_one_json_array_a_page_at_a_time(many_events, monkeypatch):
    monkeypatch.setattr(events_command, "EVENTS_PAGE", 500)
    with CaptureQueriesContext(connection) as queries:
        out = QueryStampedOutput(queries)
        call_command("events", "--json", "--limit", "0", stdout=out)
    rows = json.loads(out.getvalue())
    expected = list(AlertEvent.objects.order_by("-created_at", "-id").values_list("id", flat=True))
    assert [r["id"] for r in rows] == expected and len(rows) == 2000
    # 4 full pages and the empty read that ends them (host loaded with each page).
    assert len(queries.captured_queries) == 5
    # The first rows went out after one page query, long before the last page was read.
    assert out.stamps[0] == 1 and out.stamps[-1] == 5


def test_it_prints_the_same_json_text_as_before_for_a_few_events(many_events):
    out = StringIO()
    call_command("events", "--json", "--limit", "3", stdout=out)
    rows = json.loads(out.getvalue())
    assert out.getvalue() == json.dumps(rows, indent=2) + "\n" and len(rows) == 3


def test_it_prints_an_empty_array_and_refuses_a_negative_limit(db):
    out = StringIO()
    call_command("events", "--json", stdout=out)
    assert out.getvalue() == "[]\n"
    with pytest.raises(CommandError, match=r"^--limit -1: must be 0 \(all\) or more$"):
        call_command("events", "--limit", "-1")
