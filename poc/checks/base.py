"""What a PoC check is, what it answers, and the small network helpers checks share.

Plain Python, no Django: checks run in a child process (poc.runner) that a hard timeout
can kill with everything it opened.
"""

import ipaddress
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

SEVERITIES = ("info", "low", "medium", "high", "critical")
# Evidence is kept on the result and shown in events and emails: a banner or an excerpt,
# never a whole response.
EVIDENCE_MAX = 2000
# What one read may pull in: enough for an INFO reply or an index page.
READ_MAX = 64 * 1024
_UNPRINTABLE = re.compile(r"[^\t\n\x20-\x7e]")


class CheckError(Exception):
    """The check could not reach a verdict (refused, reset, timed out, garbled)."""


@dataclass(frozen=True)
class Verdict:
    vulnerable: bool
    severity: str
    title: str
    evidence: str = ""

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}")
        object.__setattr__(self, "evidence", evidence_clean(self.evidence))
        object.__setattr__(self, "title", evidence_clean(self.title)[:200])


def evidence_clean(text: str | bytes) -> str:
    """Printable ASCII only, capped: evidence comes from whatever answered on the port."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = _UNPRINTABLE.sub("?", text.replace("\r\n", "\n"))
    return text if len(text) <= EVIDENCE_MAX else text[: EVIDENCE_MAX - 15] + "\n...[truncated]"


@dataclass(frozen=True)
class Target:
    """One (ip, port) and the time the check has for it."""

    ip: str
    port: int
    timeout: float
    deadline: float = field(default=0.0)

    def __post_init__(self) -> None:
        ipaddress.ip_address(self.ip)  # a check never gets a name to resolve
        if not (isinstance(self.port, int) and 1 <= self.port <= 65535):
            raise ValueError(f"port {self.port!r} is outside 1-65535")
        if not self.deadline:
            object.__setattr__(self, "deadline", time.monotonic() + self.timeout)

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise CheckError(f"no answer within {self.timeout:g}s")
        return left

    def udp_exchange(self, request: bytes) -> bytes:
        """Send one datagram and return the first reply (a connected socket: only the
        target's own answer counts); CheckError on silence, ICMP unreachable or timeout.
        Sent again once half-way through the time left, as a UDP request can be lost."""
        family = socket.AF_INET6 if ":" in self.ip else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            try:
                sock.connect((self.ip, self.port))
                for attempt in range(2):
                    sock.send(request)
                    left = self.remaining()
                    sock.settimeout(left / 2 if attempt == 0 else left)
                    try:
                        return sock.recv(READ_MAX)
                    except TimeoutError:
                        continue
            except ConnectionRefusedError:
                raise CheckError("closed (ICMP port unreachable)") from None
            except OSError as exc:
                raise CheckError(f"UDP exchange failed: {exc.strerror or exc}") from None
        raise CheckError(f"no UDP answer within {self.timeout:g}s")

    def connect(self) -> "Conn":
        try:
            sock = socket.create_connection((self.ip, self.port), timeout=self.remaining())
        except TimeoutError:
            raise CheckError(f"connect timed out after {self.timeout:g}s") from None
        except OSError as exc:
            raise CheckError(f"connect failed: {exc.strerror or exc}") from None
        return Conn(sock, self)


class Conn:
    """A TCP connection whose every read and write respects the target's deadline."""

    def __init__(self, sock: socket.socket, target: Target):
        self.sock = sock
        self.target = target
        self.buffer = b""

    def __enter__(self) -> "Conn":
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.settimeout(self.target.remaining())
        try:
            self.sock.sendall(data)
        except TimeoutError:
            raise CheckError(f"send timed out after {self.target.timeout:g}s") from None
        except OSError as exc:
            raise CheckError(f"send failed: {exc.strerror or exc}") from None

    def _fill(self) -> bool:
        self.sock.settimeout(self.target.remaining())
        try:
            data = self.sock.recv(READ_MAX)
        except TimeoutError:
            raise CheckError(f"no answer within {self.target.timeout:g}s") from None
        except OSError as exc:
            raise CheckError(f"read failed: {exc.strerror or exc}") from None
        self.buffer += data
        if len(self.buffer) > READ_MAX:
            raise CheckError(f"answer longer than {READ_MAX} bytes")
        return bool(data)

    def read_until(self, marker: bytes) -> bytes:
        """Bytes up to and including marker (CheckError if the peer closes first)."""
        while marker not in self.buffer:
            if not self._fill():
                raise CheckError("connection closed before the answer ended")
        head, _, self.buffer = self.buffer.partition(marker)
        return head + marker

    def read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._fill():
                raise CheckError("connection closed before the answer ended")
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def read_all(self) -> bytes:
        """Everything until the peer closes (bounded by READ_MAX and the deadline)."""
        while self._fill():
            pass
        data, self.buffer = self.buffer, b""
        return data


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes


def http_get(target: Target, path: str) -> HttpResponse:
    """One HTTP/1.0 GET (the server closes after answering: no chunked encoding to undo)."""
    if not path.startswith("/") or any(c in path for c in " \r\n"):
        raise ValueError(f"bad path {path!r}")
    host = f"[{target.ip}]" if ":" in target.ip else target.ip
    with target.connect() as conn:
        conn.send(
            f"GET {path} HTTP/1.0\r\nHost: {host}:{target.port}\r\nUser-Agent: portmon-poc\r\n"
            "Accept: */*\r\nConnection: close\r\n\r\n".encode()
        )
        raw = conn.read_all()
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = raw.partition(b"\n\n")
    lines = head.decode("latin-1").splitlines()
    match = re.match(r"HTTP/\d(?:\.\d)? (\d{3})", lines[0] if lines else "")
    if not match:
        raise CheckError("not an HTTP answer")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return HttpResponse(int(match.group(1)), headers, body)


Runner = Callable[["Check", Target], Verdict]


@dataclass(frozen=True)
class Check:
    """A read-only proof of an exposure: which services and ports it is for, and how."""

    name: str
    title: str
    severity: str
    services: frozenset[str]
    ports: frozenset[int]
    run: Runner
    proto: str = "tcp"

    def applies(self, *, service: str, port: int, proto: str = "tcp") -> bool:
        """nmap's service name, or the service's default port: nmap names Elasticsearch
        "http" on 9200, and a port not fingerprinted yet has no name at all. A check is
        for one protocol: 161/tcp is not SNMP's port."""
        if proto != self.proto:
            return False
        return (service or "").lower() in self.services or port in self.ports

    def verdict(self, vulnerable: bool, evidence: str | bytes = "", **overrides: str) -> Verdict:
        return Verdict(
            vulnerable=vulnerable,
            severity=overrides.get("severity", self.severity),
            title=overrides.get("title", self.title),
            # Verdict holds text: a reply's bytes are decoded here.
            evidence=evidence_clean(evidence),
        )
