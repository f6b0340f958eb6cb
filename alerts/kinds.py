"""Event kinds: each defined once, with its stored value, its severity and its label.

The model's choices, the pure diffs (alerts.diff, agents.diff), the filters, the pages and
the API read the kinds from here. A kind cannot be declared without a severity (the class
refuses it); None means the event carries its own (a PoC check names it).
"""

from django.db import models

from alerts.severity import Severity, poc_severity


class KindChoices(models.TextChoices):
    """Text choices whose members are (value, severity, label)."""

    severity: Severity | None

    def __new__(cls, value: str, severity: Severity | None):
        if severity is not None and not isinstance(severity, Severity):
            raise TypeError(f"event kind {value!r}: severity must be a Severity or None")
        member = str.__new__(cls, value)
        member._value_ = value
        member.severity = severity
        return member


class EventKind(KindChoices):
    NEW_PORT = "new_port", Severity.MEDIUM, "new port"
    HIGH_RISK = "high_risk", Severity.HIGH, "high-risk port"
    CLOSED = "closed", Severity.LOW, "closed"
    REOPENED = "reopened", Severity.MEDIUM, "reopened"
    SERVICE_CHANGED = "service_changed", Severity.MEDIUM, "service changed"
    # A deny-rule match on a port that would otherwise have been quiet.
    BLACKLISTED = "blacklisted", Severity.HIGH, "blacklisted"
    # A PoC check's verdict: the check names the severity (poc_severity).
    POC_FINDING = "poc_finding", None, "PoC finding"
    # Host agents: a (process, port) not reported before on the host.
    NEW_PROCESS = "new_process", Severity.MEDIUM, "new process"
    # Host agents: a port whose owning process (name + exe) is another one than before.
    PROCESS_CHANGED = "process_changed", Severity.MEDIUM, "process changed"
    # A SYN proxy, tarpit or middlebox (scanner/synproxy.py): one event for the host
    # (port 0), not per port.
    HOST_ANSWERS_ALL = "host_answers_all", Severity.MEDIUM, "answers on all ports"


# {kind: severity} of the kinds with a fixed one (the data migration 0003 reads it).
KIND_SEVERITY = {kind.value: kind.severity for kind in EventKind if kind.severity is not None}
_SEVERITY_OF = {kind.value: kind.severity for kind in EventKind}  # None: the event says


def severity_for(kind: str, detail: dict | None = None) -> int:
    """The severity of an event of `kind`; a PoC finding carries its check's own."""
    if kind not in _SEVERITY_OF:
        return Severity.MEDIUM
    severity = _SEVERITY_OF[kind]
    return poc_severity(detail) if severity is None else severity
