"""Pure chaining rules: which events queue PoC checks, and which checks a port gets."""

from collections.abc import Iterable
from dataclasses import dataclass

from poc.checks import Check


@dataclass(frozen=True)
class ChainPolicy:
    kinds: frozenset[str]
    zones: frozenset[str]
    include_suppressed: bool = False


@dataclass(frozen=True)
class EventFacts:
    """What chaining needs to know about one event (and its port's fingerprint)."""

    event_id: int
    host_id: int
    proto: str
    port: int
    kind: str
    zone: str
    suppressed: bool
    service: str = ""


@dataclass(frozen=True)
class Planned:
    event_id: int
    host_id: int
    proto: str
    port: int
    check: str


def chain_plan(
    events: Iterable[EventFacts], *, policy: ChainPolicy, checks: Iterable[Check]
) -> list[Planned]:
    """One (port, check) per applicable check of each chained event, each pair once."""
    checks = list(checks)
    planned: dict[tuple, Planned] = {}
    for e in events:
        if e.kind not in policy.kinds or e.zone not in policy.zones:
            continue
        if e.suppressed and not policy.include_suppressed:
            continue
        for c in checks:
            if c.applies(service=e.service, port=e.port, proto=e.proto):
                key = (e.host_id, e.proto, e.port, c.name)
                planned.setdefault(key, Planned(e.event_id, e.host_id, e.proto, e.port, c.name))
    return list(planned.values())
