"""Event severity (pure: no database). Each kind's severity is declared with the kind
(alerts.kinds).

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

# PoC checks name their own severity; "info" is what scanners call the lowest one.
POC_ALIASES = {"info": Severity.LOW, "informational": Severity.LOW, "moderate": Severity.MEDIUM}


def poc_severity(detail: dict | None) -> int:
    """The severity a PoC finding's check named (detail["severity"]); medium if none."""
    named = str((detail or {}).get("severity", "")).strip().lower()
    return BY_NAME.get(named) or POC_ALIASES.get(named) or Severity.MEDIUM


def severity_value(name: str) -> int | None:
    """'high' -> 30; None for a name that is not a severity."""
    return BY_NAME.get(name.strip().lower())
