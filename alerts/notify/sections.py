"""Digest sections that other apps contribute. alerts imports none of them: an app with a
section registers its reader when Django starts (agents: the cross-check of agent reports
with scans), so the dependency runs one way, from that app to alerts."""

from collections.abc import Callable, Iterable

# name -> reader(*, network_ids) returning the section's groups (empty: no section).
_readers: dict[str, Callable[..., Iterable]] = {}


def section_register(name: str, reader: Callable[..., Iterable]) -> None:
    _readers[name] = reader


def section_read(name: str, *, network_ids: frozenset[int] | None) -> tuple:
    """The section's groups for a recipient's networks; () when no app offers it."""
    reader = _readers.get(name)
    return tuple(reader(network_ids=network_ids)) if reader else ()
