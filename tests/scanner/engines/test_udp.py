"""The UDP prober against real UDP services on loopback (IPv4 and IPv6).

Adversarial on purpose: a port that is bound but never answers (must stay open|filtered,
never open), a service that answers only the right request (SNMP with community public,
memcached's frame header), a reply from another port than the one probed (must not count),
and a closed port (ICMP port unreachable: closed, at once).
"""

import ipaddress
import socket
import threading
import time

import pytest

from scanner.engines import EngineError, udp
from scanner.engines.options import MasscanOptions, ProbeOptions
from tests.scanner.engines.conftest import sweep_args

A = ipaddress.ip_address


def free_udp_ports(n: int, ip: str = "127.0.0.1") -> list[int]:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    socks = [socket.socket(family, socket.SOCK_DGRAM) for _ in range(n)]
    try:
        for sock in socks:
            sock.bind((ip, 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


class Responder:
    """A UDP socket served by a thread: answer(request) -> reply bytes, or None for silence."""

    def __init__(self, ip, port, answer, reply_from=None):
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((ip, port))
        self.sock.settimeout(0.2)
        self.answer = answer
        self.reply_from = reply_from  # a second socket that sends the replies instead
        self.requests: list[bytes] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.stop.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.requests.append(data)
            reply = self.answer(data)
            if reply is not None:
                (self.reply_from or self.sock).sendto(reply, peer)

    def close(self):
        self.stop.set()
        self.thread.join(2)
        self.sock.close()
        if self.reply_from:
            self.reply_from.close()


@pytest.fixture
def responders():
    started = []

    def start(*args, **kwargs):
        responder = Responder(*args, **kwargs)
        started.append(responder)
        return responder

    yield start
    for responder in started:
        responder.close()


def snmp_public_only(data: bytes):
    # A v1/v2c agent that answers only its community: a silent port to anything else.
    return b"\x30\x10fake-snmp-response" if b"\x04\x06public" in data else None


def memcached_udp(data: bytes):
    # memcached drops a UDP request without its 8-byte frame header.
    if len(data) > 8 and data[8:].startswith((b"version", b"stats")):
        return data[:8] + b"VERSION 1.6.18\r\n"
    return None


def test_reply_is_open_icmp_unreachable_is_closed_and_silence_is_never_open(responders):
    echo, silent, closed = free_udp_ports(3)
    responders("127.0.0.1", echo, lambda data: b"echo:" + data)
    quiet = responders("127.0.0.1", silent, lambda data: None)
    started = time.monotonic()

    results = udp.probe(
        *sweep_args(
            proto="udp",
            targets=[A("127.0.0.1")],
            ports=[(p, p) for p in sorted((echo, silent, closed))],
            timeout=0.3,
            retries=2,
        )
    )

    states = {r.port: r.state for r in results}
    assert states == {echo: udp.OPEN, silent: udp.OPEN_FILTERED, closed: udp.CLOSED}
    assert len(quiet.requests) == 3  # one try and two retries, no answer to any
    assert time.monotonic() - started < 5
    assert [
        f.port
        for f in udp.sweep(*sweep_args(proto="udp", targets=[A("127.0.0.1")], ports=[(echo, echo)]))
    ] == [echo]


def test_services_that_answer_only_the_right_request_are_found_with_known_payloads(
    responders, monkeypatch
):
    # SNMP and memcached on their own ports would need root (161) or clash with a real
    # memcached (11211): the known requests are looked up by the probed port, so point the
    # tables at the test's ports.
    snmp_port, mc_port = free_udp_ports(2)
    monkeypatch.setitem(udp.BUILTIN_PAYLOADS, snmp_port, udp.BUILTIN_PAYLOADS[161])
    monkeypatch.setitem(udp.BUILTIN_PAYLOADS, mc_port, udp.BUILTIN_PAYLOADS[11211])
    snmp = responders("127.0.0.1", snmp_port, snmp_public_only)
    memcached = responders("127.0.0.1", mc_port, memcached_udp)

    results = udp.probe(
        *sweep_args(
            proto="udp",
            targets=[A("127.0.0.1")],
            ports=[(snmp_port, snmp_port), (mc_port, mc_port)],
            timeout=0.5,
        )
    )

    assert {r.port: r.state for r in results} == {snmp_port: udp.OPEN, mc_port: udp.OPEN}
    reply = {r.port: r.reply for r in results}
    assert reply[mc_port].endswith(b"VERSION 1.6.18\r\n")
    assert snmp.requests and memcached.requests


def test_a_reply_from_another_port_is_not_an_answer(responders):
    probed, other = free_udp_ports(2)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", other))
    responders("127.0.0.1", probed, lambda data: b"spoofed", reply_from=sender)

    results = udp.probe(
        *sweep_args(
            proto="udp", targets=[A("127.0.0.1")], ports=[(probed, probed)], timeout=0.3, retries=1
        )
    )

    assert [r.state for r in results] == [udp.OPEN_FILTERED]


def test_every_address_of_a_block_is_probed_first_and_last_included(responders):
    (port,) = free_udp_ports(1)
    for ip in ("127.0.0.4", "127.0.0.7"):
        responders(ip, port, lambda data: b"here")

    results = udp.probe(
        *sweep_args(
            proto="udp", targets=[ipaddress.ip_network("127.0.0.4/30")], ports=[(port, port)]
        )
    )

    assert [(r.ip, r.state) for r in results] == [
        ("127.0.0.4", udp.OPEN),
        ("127.0.0.5", udp.CLOSED),
        ("127.0.0.6", udp.CLOSED),
        ("127.0.0.7", udp.OPEN),
    ]


def test_ipv6(responders):
    port, closed = free_udp_ports(2, "::1")
    responders("::1", port, lambda data: b"v6")

    results = udp.probe(
        *sweep_args(proto="udp", targets=[A("::1")], ports=[(port, port), (closed, closed)])
    )

    assert {r.port: r.state for r in results} == {port: udp.OPEN, closed: udp.CLOSED}


def test_it_parses_nmaps_payload_file_format():
    text = (
        "# comment\n"
        'udp 7 "\\x0D\\x0A" # trailing comment\n'
        "udp 53,69,5300-5302\n"
        '  "\\x00\\x01a#b" "\\r\\n"\n'
        "  source 5678\n"
        'udp 9 "x"\n'
    )

    entries = udp.parse_payloads(text)

    assert entries == [
        ([(7, 7)], b"\r\n"),
        ([(53, 53), (69, 69), (5300, 5302)], b"\x00\x01a#b\r\n"),
        ([(9, 9)], b"x"),
    ]


def test_every_default_port_has_a_request_that_is_not_empty():
    ports = [int(p) for p in udp.DEFAULT_PORTS.split(",")]
    assert all(all(udp.payloads_for(p)) for p in ports)
    assert udp.payloads_for(1) == (b"",)  # no known request: an empty datagram


def test_it_refuses_bad_options():
    with pytest.raises(EngineError):
        udp.probe(*sweep_args(proto="udp", targets=[A("127.0.0.1")], ports=[(1, 1)], retries=-1))


@pytest.mark.process
def test_it_writes_payloads_masscan_can_read_and_keeps_masscans_own_where_it_has_them():
    """Debian's nmap-payloads stops masscan 1.3's parser; ours must not (masscan --echo)."""
    import shutil
    import subprocess
    import tempfile

    from scanner.engines import masscan

    ports = [int(p) for p in udp.DEFAULT_PORTS.split(",")]
    text = udp.masscan_payloads(ports)
    assert "udp 1900\n" in text and "udp 123\n" in text
    # masscan's own DNS, SNMP and memcached requests carry its cookie: not replaced.
    assert "udp 161\n" not in text and "udp 53\n" not in text
    argv = masscan.build_argv(
        targets=[ipaddress.ip_address("198.18.0.1")],
        ports=[(161, 161), (1900, 1900)],
        options=MasscanOptions(rate=1000),
        output_path=None,
        proto="udp",
        nmap_payloads="/tmp/x",
    )
    assert argv[argv.index("-p") + 1] == "U:161,U:1900"
    with pytest.raises(udp.EngineError):
        masscan.build_argv(
            targets=[ipaddress.ip_address("198.18.0.1")],
            ports=[(1, 1)],
            options=MasscanOptions(rate=1),
            output_path=None,
            proto="sctp",
        )
    if shutil.which("masscan") is None:
        pytest.fail("masscan is not installed (apt-get install masscan)")
    with tempfile.NamedTemporaryFile("w", suffix=".payloads") as fh:
        fh.write(text)
        fh.flush()
        echo = subprocess.run(
            ["masscan", "-pU:1900", "--nmap-payloads", fh.name, "--range", "198.18.0.1"]
            + ["--echo"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert "syntax error" not in echo.stdout + echo.stderr
    assert f"nmap-payloads = {fh.name}" in echo.stdout


def test_verify_calls_open_only_what_answers():
    """Candidates (masscan's): a silent bound port and a closed one are not open."""
    from scanner.findings import Finding

    replying = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    replying.bind(("127.0.0.91", 0))
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.91", 0))
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.91", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    reply_port, silent_port = replying.getsockname()[1], silent.getsockname()[1]

    def answer():
        data, peer = replying.recvfrom(512)
        replying.sendto(b"hi", peer)

    thread = threading.Thread(target=answer)
    thread.start()
    try:
        results = udp.verify(
            [
                Finding(ip="127.0.0.91", port=reply_port, proto="udp"),
                Finding(ip="127.0.0.91", port=silent_port, proto="udp"),
                Finding(ip="127.0.0.91", port=closed_port, proto="udp"),
            ],
            ProbeOptions(timeout=0.3, retries=1, concurrency=256),
        )
    finally:
        thread.join(5)
        replying.close()
        silent.close()
    states = {r.port: r.state for r in results}
    assert states == {
        reply_port: udp.OPEN,
        silent_port: udp.OPEN_FILTERED,
        closed_port: udp.CLOSED,
    }
