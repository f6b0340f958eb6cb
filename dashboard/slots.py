"""Slots on the host page for apps built beside this one (host agents, PoC checks).

The dashboard does not import them: when an app is installed and offers the selector
named here, its rows are shown; otherwise the slot says the feature is not there yet.
Contract: `agents.selectors.host_processes(*, host_id)` and
`poc.selectors.host_poc_results(*, host_id)` return lists of flat dicts (one row each).
"""

import importlib

from django.apps import apps

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
