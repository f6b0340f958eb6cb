"""Slots on the host page for apps built beside this one (host agents, PoC checks).

The dashboard does not import them: when an app is installed and offers the selector
named here, its rows are shown; otherwise the slot says the feature is not there yet.
Contract: `agents.selectors.host_processes(*, host_id)` and
`poc.selectors.host_poc_results(*, host_id)` return lists of flat dicts (one row each).
"""

import importlib
from collections.abc import Mapping

from django.apps import apps

from scanner.models import Port
from scanner.selectors import FingerprintStep

SLOTS = (
    ("processes", "Processes (host agent)", "agents", "agents.selectors", "host_processes"),
    ("poc", "PoC results", "poc", "poc.selectors", "host_poc_results"),
)


def host_slots(host) -> list[dict]:
    out = []
    for key, title, app, module, func in SLOTS:
        slot = {"key": key, "title": title, "available": False, "rows": [], "columns": []}
        if apps.is_installed(app):
            try:
                reader = getattr(importlib.import_module(module), func)
            except (ImportError, AttributeError):
                reader = None
            if reader is not None:
                rows = list(reader(host_id=host.pk))
                slot.update(available=True, rows=rows, columns=list(rows[0]) if rows else [])
        out.append(slot)
    return out


def port_rows(
    ports: list[Port],
    slots: list[dict],
    history: Mapping[tuple[str, int], list[FingerprintStep]],
) -> list[dict]:
    """The host page's one table: each port with its fingerprint history, the processes
    its agent reports listening on it now and its PoC verdicts, read from the slots' rows
    (matched on "port/proto")."""
    by_key: dict[str, dict[str, list]] = {}
    for slot in slots:
        for row in slot["rows"]:
            if slot["key"] == "processes" and row.get("state") != "listening":
                continue
            by_key.setdefault(str(row.get("port", "")), {}).setdefault(slot["key"], []).append(row)
    return [
        {
            "port": p,
            "history": history.get((p.proto, p.port), []),
            "processes": by_key.get(f"{p.port}/{p.proto}", {}).get("processes", []),
            "poc": by_key.get(f"{p.port}/{p.proto}", {}).get("poc", []),
        }
        for p in ports
    ]
