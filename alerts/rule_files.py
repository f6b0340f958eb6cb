"""Rule sets as JSON, to move them between installations (pure: no database).

A document is {"format": "portmon-rules", "version": 1, "exported_at": ..., "rules": [...]};
each rule has exactly the fields a person sets on one (no ids, hit counts or dates of
this installation). Reading is strict: a file comes from elsewhere, so an unknown field,
a wrong type or a bad value is refused with the field named, and nothing is imported.
"""

import ipaddress
import json
from dataclasses import asdict, dataclass
from datetime import datetime

from alerts.rules import (
    MATCH_FIELDS,
    MAX_LEN,
    RuleAction,
    RuleError,
    RuleProto,
    RuleSpec,
    RuleZone,
    rule_spec_validate,
    text_error,
)

FORMAT = "portmon-rules"
VERSION = 1
# Far above a real rule set (hundreds), low enough that a hostile file stays cheap.
MAX_BYTES = 1024 * 1024
MAX_RULES = 5000
ACTIONS = tuple(RuleAction.values)
PROTOS = tuple(RuleProto.values)
ZONES = tuple(RuleZone.values)
DOCUMENT_FIELDS = {"format", "version", "exported_at", "rules"}


class RuleFileError(ValueError):
    """Why a rules file is refused; the message names the field (rules[3].port_lo: ...)."""


@dataclass(frozen=True, kw_only=True)
class RuleEntry:
    """One rule as a person sets it, validated: the definition of those fields (in the
    order forms and files show them). The model has these columns and its own counters;
    its form, the admin, the API and rule files use RULE_FIELDS."""

    action: str
    ip_cidr: str = ""
    process: str = ""
    port_lo: int | None = None
    port_hi: int | None = None
    proto: str = RuleProto.ANY.value
    zone: str = RuleZone.ANY.value
    reason: str
    owner: str
    expires_at: datetime | None = None
    enabled: bool = True

    def match_key(self) -> tuple:
        """What the rule matches and does: a rule with the same match key is the same rule
        (an import updates its reason, owner, expiry or enabled flag)."""
        try:
            cidr = str(ipaddress.ip_network(self.ip_cidr, strict=False)) if self.ip_cidr else ""
        except ValueError:  # a stored rule from before validation: compared as written
            cidr = self.ip_cidr
        port_hi = self.port_hi if self.port_hi != self.port_lo else None
        return (self.action, cidr, self.process, self.port_lo, port_hi, self.proto, self.zone)

    def key(self) -> tuple:
        """Every field: an equal key means importing it again changes nothing."""
        return (*self.match_key(), self.reason, self.owner, self.expires_at, self.enabled)

    def fields(self) -> dict:
        return asdict(self)

    def spec(self, rule_id: int | None = None) -> RuleSpec:
        return RuleSpec(id=rule_id, **{name: getattr(self, name) for name in MATCH_FIELDS})


# The fields a person sets, in order.
RULE_FIELDS = tuple(RuleEntry.__dataclass_fields__)
if not set(MATCH_FIELDS) <= set(RULE_FIELDS) or not set(MAX_LEN) <= set(RULE_FIELDS):
    raise TypeError("RuleEntry must have every field of RuleSpec and of MAX_LEN")
REQUIRED = ("action", "reason", "owner")


def rule_entry_to_json(entry: RuleEntry) -> dict:
    data = entry.fields()
    data["expires_at"] = entry.expires_at.isoformat() if entry.expires_at else None
    return data


def rules_document_dump(entries: list[RuleEntry], *, exported_at: datetime) -> str:
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "exported_at": exported_at.isoformat(),
        "rules": [rule_entry_to_json(e) for e in entries],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def _no_duplicate_keys(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise RuleFileError(f"{key}: given twice in one object")
        seen[key] = value
    return seen


def _no_constant(name):
    raise RuleFileError(f"{name} is not a JSON number")


def rules_document_parse(raw: bytes | str) -> list[RuleEntry]:
    """The rules of a document, validated; RuleFileError (field named) for anything else."""
    if isinstance(raw, bytes):
        if len(raw) > MAX_BYTES:
            raise RuleFileError(f"the file is larger than {MAX_BYTES // 1024} KiB")
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise RuleFileError("the file is not UTF-8 text") from None
    elif len(raw.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise RuleFileError(f"the file is larger than {MAX_BYTES // 1024} KiB")
    try:
        doc = json.loads(raw, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant)
    except RuleFileError:
        raise
    except RecursionError:
        raise RuleFileError("the JSON is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and integers too long to convert
        raise RuleFileError(f"not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise RuleFileError("the top level must be an object with format, version and rules")
    unknown = sorted(set(doc) - DOCUMENT_FIELDS)
    if unknown:
        raise RuleFileError(f"{unknown[0][:40]}: unknown field")
    if doc.get("format") != FORMAT:
        raise RuleFileError(f"format: must be {FORMAT!r}")
    if doc.get("version") != VERSION or isinstance(doc.get("version"), bool):
        raise RuleFileError(f"version: only version {VERSION} is understood")
    if "exported_at" in doc and not isinstance(doc["exported_at"], str | None):
        raise RuleFileError("exported_at: must be a date-time string")
    rules = doc.get("rules")
    if not isinstance(rules, list):
        raise RuleFileError("rules: must be a list")
    if len(rules) > MAX_RULES:
        raise RuleFileError(f"rules: more than {MAX_RULES} rules")
    return [rule_entry_parse(item, where=f"rules[{i}]") for i, item in enumerate(rules)]


def _text(data: dict, name: str, where: str) -> str:
    value = data.get(name, "")
    if value is None and name in ("ip_cidr", "process", "zone"):
        value = ""
    if not isinstance(value, str):
        raise RuleFileError(f"{where}.{name}: must be a string")
    if text_error(value):
        raise RuleFileError(f"{where}.{name}: {text_error(value)}")
    value = value.strip()
    if name in MAX_LEN and len(value) > MAX_LEN[name]:
        raise RuleFileError(f"{where}.{name}: longer than {MAX_LEN[name]} characters")
    return value


def _port(data: dict, name: str, where: str) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    # bool is an int in Python; "22" and 22.0 are not ports.
    if isinstance(value, bool) or not isinstance(value, int):
        raise RuleFileError(f"{where}.{name}: must be an integer 1-65535 or null")
    if not 1 <= value <= 65535:
        raise RuleFileError(f"{where}.{name}: {value} is outside 1-65535")
    return value


def _choice(data: dict, name: str, where: str, choices: tuple, default: str) -> str:
    value = data.get(name, default)
    if value not in choices or not isinstance(value, str):
        allowed = ", ".join(repr(c) for c in choices)
        raise RuleFileError(f"{where}.{name}: {str(value)[:40]!r} is not one of {allowed}")
    return value


def rule_entry_parse(data, *, where: str = "rule") -> RuleEntry:
    if not isinstance(data, dict):
        raise RuleFileError(f"{where}: must be an object")
    unknown = sorted(set(data) - set(RULE_FIELDS))
    if unknown:
        raise RuleFileError(f"{where}.{unknown[0][:40]}: unknown field")
    for name in REQUIRED:
        if name not in data:
            raise RuleFileError(f"{where}.{name}: missing")
    action = _choice(data, "action", where, ACTIONS, "")
    proto = _choice(data, "proto", where, PROTOS, "any")
    zone = _choice(data, "zone", where, ZONES, "") if data.get("zone") is not None else ""
    reason, owner = _text(data, "reason", where), _text(data, "owner", where)
    for name, value in (("reason", reason), ("owner", owner)):
        if not value:
            raise RuleFileError(f"{where}.{name}: must not be empty")
    ip_cidr, process = _text(data, "ip_cidr", where), _text(data, "process", where)
    port_lo, port_hi = _port(data, "port_lo", where), _port(data, "port_hi", where)
    checks = (
        ("ip_cidr", {"ip_cidr": ip_cidr}),
        ("port_hi", {"port_lo": port_lo, "port_hi": port_hi}),
        ("process", {"process": process}),
    )
    for name, kwargs in checks:
        try:
            rule_spec_validate(**kwargs)
        except RuleError as exc:
            raise RuleFileError(f"{where}.{name}: {exc}") from None
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        raise RuleFileError(f"{where}.enabled: must be true or false")
    return RuleEntry(
        action=action,
        reason=reason,
        owner=owner,
        ip_cidr=ip_cidr,
        process=process,
        port_lo=port_lo,
        port_hi=port_hi,
        proto=proto,
        zone=zone,
        expires_at=_when(data.get("expires_at"), f"{where}.expires_at"),
        enabled=enabled,
    )


def _when(value, where: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise RuleFileError(f"{where}: must be an ISO 8601 date-time string or null")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise RuleFileError(f"{where}: {value[:40]!r} is not an ISO 8601 date-time") from None
    if when.tzinfo is None:
        raise RuleFileError(f"{where}: needs a time zone (e.g. 2027-01-01T00:00:00+00:00)")
    return when


CREATE, UPDATE, UNCHANGED = "create", "update", "unchanged"


@dataclass(frozen=True)
class PlanItem:
    entry: RuleEntry
    change: str  # CREATE, UPDATE or UNCHANGED
    rule_id: int | None = None  # the existing rule updated or already equal
    changed_fields: tuple[str, ...] = ()


def rules_import_plan(
    entries: list[RuleEntry], existing: list[tuple[int, RuleEntry]]
) -> list[PlanItem]:
    """What importing `entries` does to the `existing` rules (id, entry), in file order.

    A rule equal in every field is unchanged (importing twice duplicates nothing); one with
    the same match key (what it matches and does) is updated, the oldest such rule first;
    anything else is created. A rule given twice in the file counts once.
    """
    by_key: dict[tuple, int] = {}
    by_match: dict[tuple, list[tuple[int, RuleEntry]]] = {}
    for rule_id, entry in sorted(existing, key=lambda r: r[0]):
        by_key.setdefault(entry.key(), rule_id)
        by_match.setdefault(entry.match_key(), []).append((rule_id, entry))
    plan = []
    taken: set[int] = set()  # existing rules an earlier entry of the file already updates
    seen: set[tuple] = set()
    for entry in entries:
        key = entry.key()
        if key in seen or key in by_key:
            plan.append(PlanItem(entry, UNCHANGED, by_key.get(key)))
            seen.add(key)
            continue
        seen.add(key)
        target = next(
            ((i, e) for i, e in by_match.get(entry.match_key(), []) if i not in taken), None
        )
        if target is None:
            plan.append(PlanItem(entry, CREATE))
            continue
        rule_id, old = target
        taken.add(rule_id)
        changed = tuple(
            name
            for name in ("reason", "owner", "expires_at", "enabled")
            if getattr(old, name) != getattr(entry, name)
        )
        plan.append(PlanItem(entry, UPDATE, rule_id, changed))
    return plan
