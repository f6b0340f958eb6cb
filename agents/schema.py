"""The agent report: strict parsing of the JSON an agent posts (no database).

Everything that is not exactly what the client sends is refused with the path of the
field that is wrong: unknown fields, wrong types (a bool is not an int), strings too long
or holding control characters, ports outside 1-65535, protocols other than tcp/udp.
"""

import functools
import ipaddress
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

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
# Control characters (C0, DEL, C1) never belong in the names and paths we store, and no
# database stores a lone surrogate ("\\ud800" is valid JSON): one search finds either.
REFUSED_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
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


class Socket(NamedTuple):
    """One listening socket. A NamedTuple: a report builds hundreds, and a frozen
    dataclass's __init__ cost a fifth of the parsing."""

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
    sockets = tuple(_socket_quick(item) or _socket(item, i) for i, item in enumerate(raw))
    return Report(
        report_id=report_id,
        seq=seq,
        collected_at=collected_at,
        sockets=sockets,
        hostname=hostname,
        agent_version=version,
    )


# The optional text fields of a socket and their limits.
_TEXT = (("name", NAME_MAX), ("exe", EXE_MAX), ("cmdline", CMDLINE_MAX), ("user", USER_MAX))


def _socket_quick(item) -> Socket | None:
    """A socket as the client sends it, in one pass with no error handling; None when
    anything at all is unusual (then _socket checks it and names the field). Never more
    lenient than _socket: tests/agents/test_logic.py compares the two on random input.
    A report has hundreds of sockets: this halved the time to parse one."""
    if type(item) is not dict or not SOCKET_FIELDS.issuperset(item):
        return None
    get = item.get
    proto, address, port, pid = get("proto"), get("address"), get("port"), get("pid")
    name, exe, cmdline, user = get("name", ""), get("exe", ""), get("cmdline", ""), get("user", "")
    started = get("started_at")
    if not (
        (proto == "tcp" or proto == "udp")
        and type(address) is str
        and type(port) is int
        and 1 <= port <= 65535
        and (pid is None or (type(pid) is int and 0 <= pid <= PID_MAX))
        and type(name) is str
        and type(exe) is str
        and type(cmdline) is str
        and type(user) is str
        and len(name) <= NAME_MAX
        and len(exe) <= EXE_MAX
        and len(cmdline) <= CMDLINE_MAX
        and len(user) <= USER_MAX
        and (started is None or type(started) is str)
        and len(address) <= 45
    ):
        return None
    address = _normal_address(address)
    if address is None or REFUSED_CHARS.search(f"{name}{exe}{cmdline}{user}"):
        return None
    if started is not None:
        try:
            started = _cached_time(started)
        except SchemaError:
            return None
    return Socket(proto, address, port, pid, name, exe, cmdline, user, started)


def _socket(item, i: int) -> Socket:
    """One socket, checked field by field: a SchemaError names the first one wrong."""
    path = f"sockets[{i}]"
    if type(item) is not dict:
        raise SchemaError(path, "must be an object")
    if item.keys() - SOCKET_FIELDS or REQUIRED_SOCKET - item.keys():
        _fields(item, path + ".", SOCKET_FIELDS, REQUIRED_SOCKET)
    proto = item["proto"]
    if proto != "tcp" and proto != "udp":
        raise SchemaError(f"{path}.proto", "must be tcp or udp")
    address = item["address"]
    if type(address) is not str or len(address) > 45:
        raise SchemaError(f"{path}.address", "must be an IP address (no scope)")
    address = _address(address, f"{path}.address")
    port = item["port"]
    # type() is: a JSON true is a bool, which isinstance() would take for an int.
    if type(port) is not int or not 1 <= port <= 65535:
        raise SchemaError(f"{path}.port", "must be 1-65535")
    pid = item.get("pid")
    if pid is not None and (type(pid) is not int or not 0 <= pid <= PID_MAX):
        raise SchemaError(f"{path}.pid", f"must be 0-{PID_MAX}")
    text = {}
    for key, limit in _TEXT:
        value = item.get(key)
        if value is None:
            value = ""
        elif type(value) is not str:
            raise SchemaError(f"{path}.{key}", "must be a string")
        elif len(value) > limit:
            raise SchemaError(f"{path}.{key}", f"longer than {limit} characters")
        text[key] = value
    if REFUSED_CHARS.search("".join(text.values())):
        for key, limit in _TEXT:
            _string(text, key, f"{path}.{key}", limit)  # names the field
    started = item.get("started_at")
    return Socket(
        proto=proto,
        address=address,
        port=port,
        pid=pid,
        started_at=None if started is None else _time(started, f"{path}.started_at"),
        **text,
    )


def _fields(data: dict, prefix: str, allowed: set, required: set) -> None:
    if data.keys() - allowed:
        key = next(k for k in data if k not in allowed)
        shown = key if len(key) <= 40 else key[:40] + "..."
        raise SchemaError(prefix + shown, "unknown field")
    if required - data.keys():
        raise SchemaError(prefix + sorted(required - data.keys())[0], "is required")


def _string(data: dict, key: str, path: str, limit: int) -> str:
    value = data[key]
    if not isinstance(value, str):
        raise SchemaError(path, "must be a string")
    if len(value) > limit:
        raise SchemaError(path, f"longer than {limit} characters")
    if value and REFUSED_CHARS.search(value):
        # The client escapes control characters (a command line's newlines too).
        raise SchemaError(path, "holds control characters or a lone surrogate")
    return value


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


@functools.lru_cache(maxsize=4096)
def _cached_time(value: str) -> datetime:
    # A process's start time is the same in every report: each string is parsed once.
    return _time(value, "started_at")


def _address(value: str, path: str) -> str:
    normal = _normal_address(value)
    if normal is None:
        raise SchemaError(path, "must be an IP address (no scope)")
    return normal


@functools.lru_cache(maxsize=4096)
def _normal_address(value: str) -> str | None:
    # A report repeats a few addresses many times: each is parsed once per process.
    if "%" in value:
        return None
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    return str(address)
