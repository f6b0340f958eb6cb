"""Event list filters: parsed from a query string into a frozen dataclass (pure), so the
page, the CSV export and the API read the same filters the same way. Bad values are
reported and ignored, never a 500."""

import ipaddress
import unicodedata
from dataclasses import dataclass, field
from datetime import date

from alerts.models import EventKind, EventState
from alerts.severity import severity_value

SUPPRESSED_CHOICES = ("", "yes", "no")
# State filter values beyond the states: "open" (new, acknowledged, reopened) and "all".
STATE_GROUPS = ("open", "all")
# List orders: worst first (severity, then the longest waiting), newest or oldest first.
SORTS = {
    "severity": "severity, then age (oldest first)",
    "newest": "newest first",
    "oldest": "oldest first",
}
DEFAULT_SORT = "newest"
# Characters of the search box kept (an address, a port, a service, product or process).
SEARCH_MAX = 100


@dataclass(frozen=True)
class EventFilters:
    states: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    severity: int | None = None  # this severity or worse
    severity_max: int | None = None  # this severity or milder (with severity: exactly one)
    network_id: int | None = None
    host: str = ""  # an IP, or a CIDR
    port: int | None = None
    since: date | None = None
    until: date | None = None
    rule_id: int | None = None
    run_id: int | None = None
    suppressed: str = ""  # "", "yes", "no"
    q: str = ""  # one search box: address, port, service, product, process
    sort: str = DEFAULT_SORT
    errors: tuple[str, ...] = field(default=(), compare=False)


def _int(value: str, name: str, errors: list, lo: int = 1, hi: int = 2**63 - 1) -> int | None:
    value = value.strip()
    if not value:
        return None
    if not value.isascii() or not value.isdigit() or not lo <= int(value) <= hi:
        errors.append(f"{name}: {value[:40]!r} is not a number from {lo} to {hi}")
        return None
    return int(value)


def _date(value: str, name: str, errors: list) -> date | None:
    value = value.strip()
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        errors.append(f"{name}: {value[:40]!r} is not a date (YYYY-MM-DD)")
        return None


def event_filters_parse(
    params, *, default_states: tuple[str, ...] = (), default_sort: str = DEFAULT_SORT
) -> EventFilters:
    """`params`: a QueryDict (or any mapping with getlist/get). `default_states` apply when
    the query names no state at all (the dashboard's list: open events)."""
    errors: list[str] = []
    states = tuple(s for s in params.getlist("state") if s)
    if "state" not in params:
        states = default_states
    for s in states:
        if s not in EventState.values and s not in STATE_GROUPS:
            errors.append(f"state: {s[:40]!r} is not a state")
    if "all" in states:
        states = ()
    kinds = tuple(k for k in params.getlist("kind") if k)
    for k in kinds:
        if k not in EventKind.values:
            errors.append(f"kind: {k[:40]!r} is not a kind")
    severity = None
    if params.get("severity", "").strip():
        severity = severity_value(params["severity"])
        if severity is None:
            errors.append(f"severity: {params['severity'][:40]!r} is not a severity")
    severity_max = None
    if params.get("severity_max", "").strip():
        severity_max = severity_value(params["severity_max"])
        if severity_max is None:
            errors.append(f"severity_max: {params['severity_max'][:40]!r} is not a severity")
    host = params.get("host", "").strip()
    if host:
        try:
            ipaddress.ip_network(host, strict=False)
        except ValueError:
            errors.append(f"host: {host[:60]!r} is not an IP address or CIDR")
            host = ""
    suppressed = params.get("suppressed", "").strip()
    if suppressed not in SUPPRESSED_CHOICES:
        errors.append("suppressed: use yes or no")
        suppressed = ""
    sort = params.get("sort", "").strip() or default_sort
    if sort not in SORTS:
        errors.append(f"sort: {sort[:40]!r} is not one of {', '.join(SORTS)}")
        sort = default_sort
    # Searched as text by the database (bound parameters, LIKE wildcards escaped by the
    # ORM); control characters go (a NUL would end the pattern early in SQLite's LIKE).
    q = "".join(c for c in params.get("q", "") if unicodedata.category(c) != "Cc")
    q = " ".join(q.split())[:SEARCH_MAX]
    return EventFilters(
        states=tuple(s for s in states if s in EventState.values or s == "open"),
        kinds=tuple(k for k in kinds if k in EventKind.values),
        severity=severity,
        severity_max=severity_max,
        network_id=_int(params.get("network", ""), "network", errors),
        host=host,
        port=_int(params.get("port", ""), "port", errors, 1, 65535),
        since=_date(params.get("since", ""), "since", errors),
        until=_date(params.get("until", ""), "until", errors),
        rule_id=_int(params.get("rule", ""), "rule", errors),
        run_id=_int(params.get("run", ""), "run", errors),
        suppressed=suppressed,
        q=q,
        sort=sort,
        errors=tuple(errors),
    )
