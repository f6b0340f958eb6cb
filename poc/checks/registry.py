"""The registry of PoC checks, and how checks are found.

A team adds a check without touching the core: a module in this package (every
module here is imported), a module named in PORTMON_POC_CHECK_MODULES (comma separated,
for checks kept elsewhere), or an installed distribution's "portmon.poc_checks" entry point.
Each registers its checks with @check(...).
"""

import importlib
import logging
import os
import pkgutil
import re
from collections.abc import Iterable
from importlib.metadata import entry_points
from pathlib import Path

from poc.checks.base import SEVERITIES, Check, Runner

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "portmon.poc_checks"
MODULES_ENV = "PORTMON_POC_CHECK_MODULES"
NAME_RE = re.compile(r"[a-z][a-z0-9_]{1,47}")

_CHECKS: dict[str, Check] = {}
_loaded = False


def check(
    *,
    name: str,
    title: str,
    severity: str,
    services: Iterable[str] = (),
    ports: Iterable[int] = (),
    proto: str = "tcp",
):
    """Register the decorated function(check, target) -> Verdict as a check."""
    if not NAME_RE.fullmatch(name):
        raise ValueError(f"check name {name!r}: lower case letters, digits and _ only")
    if proto not in ("tcp", "udp"):
        raise ValueError(f"check {name}: proto must be tcp or udp")
    if severity not in SEVERITIES:
        raise ValueError(f"check {name}: severity must be one of {', '.join(SEVERITIES)}")

    def register(run: Runner) -> Runner:
        existing = _CHECKS.get(name)
        if existing is not None and existing.run is not run:
            raise ValueError(f"two checks are named {name!r}")
        _CHECKS[name] = Check(
            name=name,
            title=title,
            severity=severity,
            services=frozenset(s.lower() for s in services),
            ports=frozenset(int(p) for p in ports),
            run=run,
            proto=proto,
        )
        return run

    return register


def checks_load() -> dict[str, Check]:
    """Import every check module once; returns the registry (name -> Check)."""
    global _loaded
    if _loaded:
        return _CHECKS
    # By path and name, not `import poc.checks`: that package imports this module.
    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if not module.name.startswith("_") and module.name not in ("base", "registry"):
            importlib.import_module(f"{__package__}.{module.name}")
    for name in filter(None, (m.strip() for m in os.environ.get(MODULES_ENV, "").split(","))):
        importlib.import_module(name)
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            point.load()
        except Exception:
            # One broken plugin must not take the built-in checks down with it.
            logger.exception("PoC check plugin %s failed to load", point.name)
    _loaded = True
    return _CHECKS


def check_get(name: str) -> Check:
    """The check by name; KeyError with the known names if there is none."""
    checks = checks_load()
    if name not in checks:
        raise KeyError(f"unknown check {name!r}; known: {', '.join(sorted(checks))}")
    return checks[name]


def checks_for(*, service: str, port: int, proto: str = "tcp") -> list[Check]:
    """The checks that apply to a port, by nmap's service name (or the port number)."""
    return [
        c
        for _, c in sorted(checks_load().items())
        if c.applies(service=service, port=port, proto=proto)
    ]
