"""Pure digest logic: sections, limits, summaries."""

from datetime import UTC, datetime

from alerts.notify.content import Item, sections_build

AT = datetime(2026, 11, 21, 7, 0, tzinfo=UTC)


def item(n: int, kind: str = "new_port", **kw) -> Item:
    return Item(
        event_id=n,
        kind=kind,
        ip=f"198.18.0.{n % 250}",
        proto="tcp",
        port=1000 + n,
        network="198.18.0.0/24",
        state="new",
        created_at=AT,
        url=f"http://x/events/{n}/",
        **kw,
    )


def test_it_lists_a_limited_number_of_items_and_counts_the_rest():
    [section] = sections_build([item(n) for n in range(250)], limit=200)
    assert (section.title, section.total, len(section.items), section.more) == (
        "New ports",
        250,
        200,
        50,
    )


def test_it_puts_unknown_kinds_in_other_changes_and_allowed_events_only_in_rule_hits():
    sections = sections_build(
        [
            item(1, "agent_thing"),
            item(2, suppressed=True, rule_action="allow", rule_reason="ok"),
            item(3, "high_risk", rule_action="deny"),
        ]
    )
    assert [(s.key, [i.event_id for i in s.items]) for s in sections] == [
        ("high_risk", [3]),
        ("other", [1]),
        ("rule_hits", [2, 3]),
    ]


def test_it_summarises_fingerprint_changes_and_reasons():
    changed = item(
        1, "service_changed", detail={"old": {"label": "http"}, "new": {"service": "mysql"}}
    )
    assert changed.summary == "http -> mysql"
    assert item(2, detail={"reason": "never seen"}).summary == "never seen"
    assert item(3, detail={"fingerprint": {"label": "ssh OpenSSH"}, "reason": "new"}).summary == (
        "ssh OpenSSH (new)"
    )
    assert item(4).summary == ""
    assert item(5).endpoint == "198.18.0.5:1005/tcp"
