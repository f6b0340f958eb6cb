"""Pure white/black-list rule matching (no database).

Precedence, for one candidate event:
1. Disabled rules and rules whose expires_at has passed are ignored.
2. A matching deny rule beats any matching allow rule (a blacklist cannot be
   whitelisted away by a broader allow).
3. Among matching rules of the winning action, the oldest (lowest id) is credited.
Blank fields match anything. A rule naming a process only matches subjects that have a
process (host-agent reports); scan results have none, so it never matches them.
"""

import fnmatch
import ipaddress
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime

from django.db import models

# A rule's fields are defined once: the values of its choices and the sizes of its text
# here, what it matches in RuleSpec, what a person sets in alerts.rule_files.RuleEntry.
# The model, its form, the admin, the API serializer and rule files derive from them.


class RuleAction(models.TextChoices):
    ALLOW = "allow", "allow (whitelist: no alert)"
    DENY = "deny", "deny (blacklist: alert at once)"


class RuleProto(models.TextChoices):
    ANY = "any", "any"
    TCP = "tcp", "tcp"
    UDP = "udp", "udp"


class RuleZone(models.TextChoices):
    ANY = "", "any"
    INTERNAL = "internal", "internal"
    EXTERNAL = "external", "external"


ALLOW = RuleAction.ALLOW
DENY = RuleAction.DENY
# Characters a text field holds (the model's columns; rule files refuse longer text).
MAX_LEN = {"ip_cidr": 49, "process": 200, "reason": 300, "owner": 200}


class RuleError(ValueError):
    """A rule field that cannot be accepted; the message is meant for the user."""


@dataclass(frozen=True)
class RuleSpec:
    id: int | None
    action: str
    ip_cidr: str = ""
    process: str = ""
    port_lo: int | None = None
    port_hi: int | None = None
    proto: str = "any"
    zone: str = ""
    expires_at: datetime | None = None
    enabled: bool = True

    def __post_init__(self) -> None:
        # Parsed once: a diff matches many subjects against the same rules.
        network = ipaddress.ip_network(self.ip_cidr.strip(), strict=False) if self.ip_cidr else None
        object.__setattr__(self, "_network", network)

    def active(self, at: datetime) -> bool:
        return self.enabled and (self.expires_at is None or self.expires_at > at)

    def matches(self, subject: "Subject") -> bool:
        network = self._network  # type: ignore[attr-defined]
        if network is not None:
            try:
                address = ipaddress.ip_address(subject.ip)
            except ValueError:
                return False
            if address.version != network.version or address not in network:
                return False
        if self.proto not in ("", "any") and self.proto != subject.proto:
            return False
        if self.zone and self.zone != subject.zone:
            return False
        if self.port_lo is not None:
            hi = self.port_hi if self.port_hi is not None else self.port_lo
            if subject.port is None or not self.port_lo <= subject.port <= hi:
                return False
        if self.process:
            if not subject.process or not fnmatch.fnmatchcase(subject.process, self.process):
                return False
        return True


# What a rule matches and does: RuleSpec's fields but its id.
MATCH_FIELDS = tuple(f.name for f in fields(RuleSpec) if f.name != "id")


@dataclass(frozen=True)
class Subject:
    """What a rule is matched against: one candidate event."""

    ip: str
    proto: str
    port: int | None
    zone: str = ""
    process: str = ""


@dataclass(frozen=True)
class Decision:
    action: str | None  # "allow", "deny" or None (no rule matched)
    rule_id: int | None = None

    @property
    def suppressed(self) -> bool:
        return self.action == ALLOW

    @property
    def immediate(self) -> bool:
        return self.action == DENY


NO_MATCH = Decision(None)


def text_error(value: str) -> str | None:
    """Why text cannot be part of a rule, or None: what `rules export` writes must read
    back (rule_files refuses control characters), and a lone surrogate cannot be written."""
    for c in value:
        category = unicodedata.category(c)
        if category == "Cc":
            return "control characters are not allowed"
        if category == "Cs":
            return "lone surrogates are not allowed"
    return None


def rule_spec_validate(
    *, ip_cidr: str = "", port_lo: int | None = None, port_hi: int | None = None, process=""
) -> None:
    """Raise RuleError when a rule's fields make no sense."""
    if ip_cidr:
        try:
            ipaddress.ip_network(ip_cidr.strip(), strict=True)
        except ValueError as exc:
            raise RuleError(f"{ip_cidr!r} is not an IP or CIDR ({exc})") from None
    if port_lo is None and port_hi is not None:
        raise RuleError("a port range needs its low end")
    for value in (port_lo, port_hi):
        if value is not None and not 1 <= value <= 65535:
            raise RuleError(f"port {value} is outside 1-65535")
    if port_lo is not None and port_hi is not None and port_hi < port_lo:
        raise RuleError(f"port range {port_lo}-{port_hi} is reversed")
    if process and any(c in process for c in "/\0\n"):
        raise RuleError("a process glob is a name, not a path")
    if text_error(process):
        raise RuleError(f"process: {text_error(process)}")


def rules_decide(rules: Iterable[RuleSpec], subject: Subject, *, at: datetime) -> Decision:
    """Apply the precedence above to one subject."""
    return RuleBook(rules, at=at).decide(subject)


class RuleBook:
    """The active rules at one moment, sorted once, for matching many subjects."""

    def __init__(self, rules: Iterable[RuleSpec], *, at: datetime) -> None:
        self.at = at
        active = sorted((r for r in rules if r.active(at)), key=lambda r: r.id or 0)
        self.deny = [r for r in active if r.action == DENY]
        self.allow = [r for r in active if r.action == ALLOW]

    def __bool__(self) -> bool:
        return bool(self.deny or self.allow)

    def decide(self, subject: Subject) -> Decision:
        for rule in self.deny:
            if rule.matches(subject):
                return Decision(DENY, rule.id)
        for rule in self.allow:
            if rule.matches(subject):
                return Decision(ALLOW, rule.id)
        return NO_MATCH
