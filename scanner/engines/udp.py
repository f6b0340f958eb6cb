"""Built-in asynchronous UDP prober: no root, works on loopback, on-link networks and IPv6.

UDP has no handshake, so a port's state comes only from what answers a request:
- a UDP reply from the port: **open**;
- ICMP port unreachable (ECONNREFUSED on a connected socket): **closed**;
- other ICMP unreachables (host, network, administratively prohibited): **filtered**;
- silence after every try: **open|filtered**. A firewall that drops, a service that ignores
  a malformed request and a lost datagram look the same; it is never reported or diffed as
  open (masscan #182 and naabu #603 are what calling silence "open" gives).

Each probe is a connected, non-blocking socket with IP_RECVERR: the kernel then delivers only
the target's own replies and every ICMP error about it to this socket. Requests come from
Debian nmap's `nmap-payloads` (the payloads nmap -sU sends, meant to draw an answer without
changing state or tripping IDS rules), read at run time, plus a few built-ins for services
that file lacks; a port with no known request gets an empty datagram, which few services
answer (their ports then stay open|filtered, as with nmap -sU).
"""

import asyncio
import errno
import functools
import ipaddress
import re
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from scanner.findings import Finding
from scanner.targets import UDP_DEFAULT_PORTS

from .base import (
    EngineError,
    EngineTimeout,
    IPTarget,
    Progress,
    check_number,
    merge_ports,
)
from .options import NO_EVENTS, UDP_PROBES, ProbeOptions, SweepEvents, SweepOptions

OPEN, CLOSED, FILTERED, OPEN_FILTERED = "open", "closed", "filtered", "open|filtered"
NMAP_PAYLOADS = Path("/usr/share/nmap/nmap-payloads")
PROGRESS_EVERY = 0.5
MAX_HOSTS = 1 << 16  # UDP probing is slow (ICMP rate limits): bigger jobs are the planner's
REPLY_KEEP = 512  # bytes of a reply kept as evidence
# IP_RECVERR / IPV6_RECVERR: every ICMP error about the flow is reported, not only the "hard"
# ones (port unreachable). Missing from older socket modules: Linux's values.
_IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
_IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)

# The curated default (scanner.targets.UDP_DEFAULT_PORTS, where policies read it too).
DEFAULT_PORTS = UDP_DEFAULT_PORTS

# Requests nmap-payloads does not carry (or a machine without nmap): read-only and harmless.
BUILTIN_PAYLOADS: dict[int, tuple[bytes, ...]] = {
    # DNS: a standard query for the root's NS records (any resolver or server answers).
    53: (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x01",),
    # TFTP: read request for a file that does not exist (an error packet is an answer).
    69: (b"\x00\x01portmon-probe.txt\x00octet\x00",),
    # NTP: a client (mode 3) request.
    123: (b"\xe3" + b"\x00" * 47,),
    # SNMP v2c get-request of sysDescr.0 with community "public": a read.
    161: (
        bytes.fromhex(
            "302902010104067075626c6963a01c0204504d4f4e020100020100300e300c06082b060102010101000500"
        ),
    ),
    # SSDP: M-SEARCH for all devices.
    1900: (
        b'M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: "ssdp:discover"\r\n'
        b"MX: 1\r\nST: ssdp:all\r\n\r\n",
    ),
    # WS-Discovery: a Probe with no type filter.
    3702: (
        b'<?xml version="1.0" encoding="utf-8"?><soap:Envelope '
        b'xmlns:soap="http://www.w3.org/2003/05/soap-envelope" '
        b'xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
        b'xmlns:wsd="http://schemas.xmlsoap.org/ws/2005/04/discovery"><soap:Header>'
        b"<wsa:To>urn:schemas-xmlsoap-org:ws:2005:04:discovery</wsa:To>"
        b"<wsa:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe</wsa:Action>"
        b"<wsa:MessageID>urn:uuid:00000000-0000-4000-8000-706f72746d6f</wsa:MessageID>"
        b"</soap:Header><soap:Body><wsd:Probe/></soap:Body></soap:Envelope>",
    ),
    # SIP: OPTIONS (what every SIP scanner and monitor sends).
    5060: (
        b"OPTIONS sip:portmon@invalid SIP/2.0\r\nVia: SIP/2.0/UDP invalid;branch=z9hG4bKpm\r\n"
        b"Max-Forwards: 0\r\nTo: <sip:portmon@invalid>\r\nFrom: <sip:portmon@invalid>;tag=pm\r\n"
        b"Call-ID: portmon-probe\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
    ),
    # memcached UDP: frame header + "version" (shorter reply than stats).
    11211: (b"\x00\x01\x00\x00\x00\x01\x00\x00version\r\n",),
}


@dataclass(frozen=True)
class UdpResult:
    ip: str
    port: int
    state: str
    reply: bytes = b""


# --- nmap-payloads ---------------------------------------------------------------------------
_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"|(#.*)|(\S+)')
_ESCAPES = {"0": b"\x00", "a": b"\x07", "b": b"\x08", "f": b"\x0c", "n": b"\n", "r": b"\r"}
_ESCAPES |= {"t": b"\t", "v": b"\x0b", "\\": b"\\", '"': b'"', "'": b"'"}


def _unescape(text: str) -> bytes:
    out = bytearray()
    i = 0
    while i < len(text):
        char = text[i]
        if char != "\\":
            out += char.encode("latin-1")
            i += 1
            continue
        code = text[i + 1 : i + 2]
        if code == "x":
            out.append(int(text[i + 2 : i + 4], 16))
            i += 4
        elif code in _ESCAPES:
            out += _ESCAPES[code]
            i += 2
        else:
            raise ValueError(f"unknown escape \\{code}")
    return bytes(out)


def _ports(spec: str) -> list[tuple[int, int]]:
    ranges = []
    for item in spec.split(","):
        lo, _, hi = item.partition("-")
        ranges.append((int(lo), int(hi or lo)))
    return ranges


def parse_payloads(text: str) -> list[tuple[list[tuple[int, int]], bytes]]:
    """Entries of an nmap-payloads file: (port ranges, payload). Unknown keywords skipped."""
    entries: list[tuple[list[tuple[int, int]], bytes]] = []
    current: tuple[list[tuple[int, int]], bytearray] | None = None
    expect_ports = False
    for line in text.splitlines():
        for match in _TOKEN.finditer(line):
            quoted, comment, word = match.groups()
            if comment is not None:
                break
            if quoted is not None:
                if current is None:
                    raise ValueError(f"payload outside an entry: {line!r}")
                current[1].extend(_unescape(quoted))
            elif expect_ports:
                current = (_ports(word), bytearray())
                expect_ports = False
            elif word == "udp":
                if current is not None:
                    entries.append((current[0], bytes(current[1])))
                current = None
                expect_ports = True
            else:
                break  # a keyword such as "source 5678": the rest of the line is its own
    if current is not None:
        entries.append((current[0], bytes(current[1])))
    return entries


@functools.lru_cache(maxsize=4)
def _nmap_payloads(path: Path) -> tuple[tuple[tuple[tuple[int, int], ...], bytes], ...]:
    try:
        text = path.read_text(encoding="latin-1")
    except OSError:
        return ()
    try:
        return tuple((tuple(ports), payload) for ports, payload in parse_payloads(text))
    except (ValueError, IndexError):
        return ()  # a file we cannot read right: the built-ins still work


def payloads_for(port: int, path: Path = NMAP_PAYLOADS) -> tuple[bytes, ...]:
    """The requests sent to a UDP port: nmap's for it, then ours; an empty datagram if none."""
    found = [p for ranges, p in _nmap_payloads(path) if any(lo <= port <= hi for lo, hi in ranges)]
    for payload in BUILTIN_PAYLOADS.get(port, ()):
        if payload not in found:
            found.append(payload)
    return tuple(found) or (b"",)


# Ports masscan 1.3 has a request of its own for (templ-payloads.c): it puts its cookie in
# them (DNS id, SNMP request-id) and checks it in the reply, so ours must not replace them
# (measured: with nmap's requests, masscan reported no DNS or SNMP service of the lab).
# Not 123: its own is a mode 7 monlist, which no current ntpd answers; a mode 3 one is.
MASSCAN_BUILTIN = frozenset({53, 137, 161, 11211})


def masscan_payloads(ports: Iterable[int], path: Path = NMAP_PAYLOADS) -> str:
    """An nmap-payloads file masscan 1.3 can read: one request per port, hex only.

    Debian's own file stops masscan's parser ("syntax error, expected udp" at its first
    comment after a string, line 225), so the requests are written out again without
    comments or `source` lines; masscan's built-ins cover the ports left out.
    """
    entries = []
    for port in sorted(set(ports) - MASSCAN_BUILTIN):
        request = payloads_for(port, path)[0]
        if request:
            escaped = "".join("\\x" + format(b, "02x") for b in request)
            entries.append(f'udp {port}\n  "{escaped}"\n')
    return "\n".join(entries)


# --- probing ---------------------------------------------------------------------------------
async def _probe(
    loop: asyncio.AbstractEventLoop,
    ip: str,
    port: int,
    *,
    timeout: float,
    retries: int,
    payloads: tuple[bytes, ...],
) -> UdpResult:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
    try:
        if family == socket.AF_INET:
            sock.setsockopt(socket.SOL_IP, _IP_RECVERR, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVERR, 1)
        try:
            sock.connect((ip, port))
        except OSError as exc:
            return UdpResult(ip, port, _error_state(exc.errno))
        for _attempt in range(retries + 1):
            waiter = loop.create_future()

            def readable(waiter: asyncio.Future = waiter) -> None:
                if not waiter.done():
                    waiter.set_result(None)

            loop.add_reader(sock.fileno(), readable)
            try:
                for payload in payloads:
                    try:
                        sock.send(payload)
                    except BlockingIOError:
                        pass  # the send buffer is full: the next try sends again
                    except OSError as exc:  # an ICMP error queued by an earlier try
                        return UdpResult(ip, port, _error_state(exc.errno))
                try:
                    await asyncio.wait_for(waiter, timeout)
                except TimeoutError:
                    continue
            finally:
                loop.remove_reader(sock.fileno())
            try:
                reply = sock.recv(65535)
            except BlockingIOError:
                continue
            except OSError as exc:
                return UdpResult(ip, port, _error_state(exc.errno))
            return UdpResult(ip, port, OPEN, reply[:REPLY_KEEP])
        return UdpResult(ip, port, OPEN_FILTERED)
    finally:
        sock.close()


def _error_state(code: int | None) -> str:
    """ICMP port unreachable means closed; any other refusal on the way means filtered."""
    return CLOSED if code == errno.ECONNREFUSED else FILTERED


def probe(options: SweepOptions, events: SweepEvents = NO_EVENTS) -> list[UdpResult]:
    """Probe every address of options.targets (minus its exclusions) on its UDP ports; a
    result per (address, port).

    A silent port is tried options.prober.retries more times (a lost request or reply), each
    try sending every known request for the port. Past options.deadline EngineTimeout is
    raised with the open ports so far (as Findings) in `.partial`. events.progress gets the
    percent done and the open ports so far.
    """
    if options.proto != "udp":
        raise EngineError("the UDP prober probes UDP; TCP ports go to the connect engine")
    port_ranges = merge_ports(options.ports)
    addresses = [str(a) for t in options.probe_targets() for a in _addresses(t)]
    if len(addresses) > MAX_HOSTS:
        raise EngineError(f"{len(addresses)} addresses in one UDP probe; split the targets")
    jobs = [(ip, port) for lo, hi in port_ranges for port in range(lo, hi + 1) for ip in addresses]
    return _probe_jobs(jobs, options.prober, on_progress=events.progress, deadline=options.deadline)


def sweep(options: SweepOptions, events: SweepEvents = NO_EVENTS) -> list[Finding]:
    """probe(), keeping the open ports only, as Findings (proto "udp"); events.finding gets
    each of them once the probe is over."""
    found = [
        Finding(ip=r.ip, port=r.port, proto="udp")
        for r in probe(options, events)
        if r.state == OPEN
    ]
    if events.finding:
        for finding in found:
            events.finding(finding)
    return found


def verify(
    candidates: Iterable[Finding],
    probes: ProbeOptions = UDP_PROBES,
    *,
    deadline: float | None = None,
) -> list[UdpResult]:
    """Probe exactly these (ip, port) pairs (UDP candidates, e.g. masscan's); a result each."""
    if not isinstance(probes, ProbeOptions):
        raise EngineError("probes must be a ProbeOptions")
    if deadline is not None:
        check_number("deadline", deadline, 0, float("inf"))
    jobs = sorted({(str(ipaddress.ip_address(f.ip)), int(f.port)) for f in candidates})
    if any(not 1 <= port <= 65535 for _ip, port in jobs):
        raise EngineError("UDP candidate port outside 1-65535")
    if not jobs:
        return []
    return _probe_jobs(jobs, probes, on_progress=None, deadline=deadline)


def _probe_jobs(
    jobs: list[tuple[str, int]],
    probes: ProbeOptions,
    *,
    on_progress: Progress | None,
    deadline: float | None,
    payloads_path: Path = NMAP_PAYLOADS,
) -> list[UdpResult]:
    """probe()'s and verify()'s one engine run over checked (ip, port) pairs."""
    requests = {port: payloads_for(port, payloads_path) for _ip, port in jobs}
    return asyncio.run(
        _run(
            jobs,
            requests,
            timeout=probes.timeout,
            retries=probes.retries,
            concurrency=probes.concurrency,
            on_progress=on_progress,
            deadline=deadline,
        )
    )


def _addresses(target: IPTarget) -> Iterable[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    if isinstance(target, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return [target]
    # Every address: a target is an address set, not a subnet.
    first = target.network_address
    return (first + offset for offset in range(target.num_addresses))


async def _run(
    jobs: list[tuple[str, int]],
    requests: dict[int, tuple[bytes, ...]],
    *,
    timeout: float,
    retries: int,
    concurrency: int,
    on_progress: Progress | None,
    deadline: float | None,
) -> list[UdpResult]:
    loop = asyncio.get_running_loop()
    results: list[UdpResult] = []
    pending = iter(jobs)
    timed_out = False

    async def worker() -> None:
        nonlocal timed_out
        for ip, port in pending:
            if deadline is not None and time.monotonic() > deadline:
                timed_out = True
                return
            results.append(
                await _probe(
                    loop, ip, port, timeout=timeout, retries=retries, payloads=requests[port]
                )
            )

    async def reporter() -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY)
            opened = sum(1 for r in results if r.state == OPEN)
            on_progress(100.0 * len(results) / max(len(jobs), 1), opened)  # type: ignore[misc]

    ticker = asyncio.create_task(reporter()) if on_progress else None
    try:
        await asyncio.gather(*(worker() for _ in range(min(concurrency, max(len(jobs), 1)))))
    finally:
        if ticker:
            ticker.cancel()
    results.sort(key=lambda r: (ipaddress.ip_address(r.ip), r.port))
    if timed_out:
        raise EngineTimeout(
            f"UDP probe stopped at its deadline after {len(results)} of {len(jobs)} probes",
            partial=[
                Finding(ip=r.ip, port=r.port, proto="udp") for r in results if r.state == OPEN
            ],
        )
    if on_progress:
        on_progress(100.0, sum(1 for r in results if r.state == OPEN))
    return results
