"""Event severity, derived from the kind (pure: no database).

Stored on AlertEvent as a small integer so that filters and "worst first" sorting use an
index; the labels are what people and the API see.
"""

from django.db import models


class Severity(models.IntegerChoices):
    LOW = 10, "low"
    MEDIUM = 20, "medium"
    HIGH = 30, "high"
    CRITICAL = 40, "critical"


BY_NAME = {label: value for value, label in Severity.choices}

KIND_SEVERITY = {
    "high_risk": Severity.HIGH,
    "blacklisted": Severity.HIGH,
    "new_port": Severity.MEDIUM,
    "reopened": Severity.MEDIUM,
    "service_changed": Severity.MEDIUM,
    "new_process": Severity.MEDIUM,
    "process_changed": Severity.MEDIUM,
    "closed": Severity.LOW,
}
# PoC checks name their own severity; "info" is what scanners call the lowest one.
POC_ALIASES = {"info": Severity.LOW, "informational": Severity.LOW, "moderate": Severity.MEDIUM}


def severity_for(kind: str, detail: dict | None = None) -> int:
    """The severity of an event of `kind`; a PoC finding carries its check's own."""
    if kind == "poc_finding":
        named = str((detail or {}).get("severity", "")).strip().lower()
        return BY_NAME.get(named) or POC_ALIASES.get(named) or Severity.MEDIUM
    return KIND_SEVERITY.get(kind, Severity.MEDIUM)


def severity_value(name: str) -> int | None:
    """'high' -> 30; None for a name that is not a severity."""
    return BY_NAME.get(name.strip().lower())
