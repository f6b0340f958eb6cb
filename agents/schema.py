"""The agent report: strict parsing of the JSON an agent posts (no database).

Everything that is not exactly what the client sends is refused with the path of the
field that is wrong: unknown fields, wrong types (a bool is not an int), strings too long
or holding control characters, ports outside 1-65535, protocols other than tcp/udp.
"""

import ipaddress
import json
import re
from dataclasses import dataclass
from datetime import datetime

# One report lists every listening socket of a server; 4,000 is far above what real
# servers have (a busy one: a few hundred) and keeps a report under the body limit.
MAX_SOCKETS = 4000
NAME_MAX = 128
EXE_MAX = 512
CMDLINE_MAX = 1024
USER_MAX = 64
HOSTNAME_MAX = 255
VERSION_MAX = 32
PID_MAX = 2**31 - 1
# Milliseconds since the epoch make a sequence that survives a lost state file.
SEQ_MAX = 2**62
REPORT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Control characters (C0, DEL, C1) never belong in the names and paths we store.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
PROTOS = ("tcp", "udp")

TOP_FIELDS = {"report_id", "seq", "collected_at", "hostname", "agent_version", "sockets"}
REQUIRED_TOP = {"report_id", "seq", "collected_at", "sockets"}
SOCKET_FIELDS = {
    "proto", "address", "port", "pid", "name", "exe", "cmdline", "user", "started_at",
}  # fmt: skip
REQUIRED_SOCKET = {"proto", "address", "port"}


class SchemaError(ValueError):
    """A report that is refused; `field` names what is wrong (for the 400 body)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Socket:
    proto: str
    address: str  # normalised text form: IPv4-mapped IPv6 as IPv4
    port: int
    pid: int | None = None
    name: str = ""
    exe: str = ""
    cmdline: str = ""
    user: str = ""
    started_at: datetime | None = None

    @property
    def identity(self) -> tuple[str, str]:
        return (self.name, self.exe)


@dataclass(frozen=True)
class Report:
    report_id: str
    seq: int
    collected_at: datetime
    sockets: tuple[Socket, ...]
    hostname: str = ""
    agent_version: str = ""


def report_parse(body: bytes) -> Report:
    """bytes -> Report, or SchemaError naming the field."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SchemaError("body", f"not UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except SchemaError:
        raise
    except RecursionError:
        raise SchemaError("body", "nested too deeply") from None
    except ValueError as exc:
        # JSONDecodeError, and ints past Python's digit limit.
        raise SchemaError("body", f"not JSON ({str(exc)[:80]})") from None
    return report_validate(data)


def _no_constant(name: str):
    raise SchemaError("body", f"{name} is not JSON")


def report_validate(data) -> Report:
    if not isinstance(data, dict):
        raise SchemaError("body", "must be a JSON object")
    _fields(data, "", TOP_FIELDS, REQUIRED_TOP)
    report_id = _string(data, "report_id", "report_id", 36)
    if not REPORT_ID.fullmatch(report_id):
        raise SchemaError("report_id", "must be a lower-case UUID")
    seq = _integer(data["seq"], "seq", 1, SEQ_MAX)
    collected_at = _time(data["collected_at"], "collected_at")
    hostname = _string(data, "hostname", "hostname", HOSTNAME_MAX) if "hostname" in data else ""
    version = (
        _string(data, "agent_version", "agent_version", VERSION_MAX)
        if "agent_version" in data
        else ""
    )
    raw = data["sockets"]
    if not isinstance(raw, list):
        raise SchemaError("sockets", "must be a list")
    if len(raw) > MAX_SOCKETS:
        raise SchemaError("sockets", f"more than {MAX_SOCKETS} sockets")
    sockets = tuple(_socket(item, f"sockets[{i}]") for i, item in enumerate(raw))
    return Report(
        report_id=report_id,
        seq=seq,
        collected_at=collected_at,
        sockets=sockets,
        hostname=hostname,
        agent_version=version,
    )


def _socket(item, path: str) -> Socket:
    if not isinstance(item, dict):
        raise SchemaError(path, "must be an object")
    _fields(item, path + ".", SOCKET_FIELDS, REQUIRED_SOCKET)
    proto = _string(item, "proto", f"{path}.proto", 3)
    if proto not in PROTOS:
        raise SchemaError(f"{path}.proto", "must be tcp or udp")
    address = _address(_string(item, "address", f"{path}.address", 45), f"{path}.address")
    port = _integer(item["port"], f"{path}.port", 1, 65535)
    pid = item.get("pid")
    if pid is not None:
        pid = _integer(pid, f"{path}.pid", 0, PID_MAX)
    started = item.get("started_at")
    return Socket(
        proto=proto,
        address=address,
        port=port,
        pid=pid,
        name=_optional(item, "name", path, NAME_MAX),
        exe=_optional(item, "exe", path, EXE_MAX),
        cmdline=_optional(item, "cmdline", path, CMDLINE_MAX),
        user=_optional(item, "user", path, USER_MAX),
        started_at=None if started is None else _time(started, f"{path}.started_at"),
    )


def _fields(data: dict, prefix: str, allowed: set, required: set) -> None:
    for key in data:
        if key not in allowed:
            shown = key if len(key) <= 40 else key[:40] + "..."
            raise SchemaError(prefix + shown, "unknown field")
    for key in sorted(required - data.keys()):
        raise SchemaError(prefix + key, "is required")


def _string(data: dict, key: str, path: str, limit: int) -> str:
    value = data[key]
    if not isinstance(value, str):
        raise SchemaError(path, "must be a string")
    if len(value) > limit:
        raise SchemaError(path, f"longer than {limit} characters")
    if CONTROL.search(value):
        # The client escapes them (a command line's newlines too); NUL would not store.
        raise SchemaError(path, "holds control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # "\\ud800" is valid JSON but no database stores a lone surrogate.
        raise SchemaError(path, "holds a lone surrogate") from None
    return value


def _optional(item: dict, key: str, path: str, limit: int) -> str:
    if item.get(key) is None:
        return ""
    return _string(item, key, f"{path}.{key}", limit)


def _integer(value, path: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SchemaError(path, "must be an integer")
    if not lo <= value <= hi:
        raise SchemaError(path, f"must be {lo}-{hi}")
    return value


def _time(value, path: str) -> datetime:
    if not isinstance(value, str) or len(value) > 40:
        raise SchemaError(path, "must be an ISO 8601 time string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise SchemaError(path, "must be an ISO 8601 time string") from None
    if parsed.tzinfo is None:
        raise SchemaError(path, "needs a time zone")
    return parsed


def _address(value: str, path: str) -> str:
    if "%" in value:
        raise SchemaError(path, "must be an IP address without a scope")
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise SchemaError(path, "must be an IP address") from None
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    return str(address)
