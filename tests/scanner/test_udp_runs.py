"""UDP through runs: --udp-ports, UDP shards, per-protocol coverage, honest states.

Loopback: the connect path (udp.sweep). A replying service is open; a bound socket that
never answers (silent) and a port with nothing bound (ICMP port unreachable: closed) are
never listed.
"""

import socket
import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command

from alerts.diff import Span, coverage_parse, first_covered, span_redundant
from scanner.models import CoverageSpan, Port, PortObservation, ScanShard
from scanner.services.runs import run_start
from scanner.targets import UDP_DEFAULT_PORTS, parse_ports, port_list
from tests.scanner.test_scan_command import scan


class UdpServers:
    """UDP sockets on loopback: `reply` ones answer every datagram, `silent` ones never do."""

    def __init__(self, ip: str, *, reply: int = 1, silent: int = 1):
        self.ip = ip
        self.stop = threading.Event()
        self.reply = [self._bind() for _ in range(reply)]
        self.silent = [self._bind() for _ in range(silent)]
        # A closed port: bound once to learn a free number, then released (nothing there).
        probe = self._bind()
        self.closed_port = probe.getsockname()[1]
        probe.close()
        self.reply_ports = [s.getsockname()[1] for s in self.reply]
        self.silent_ports = [s.getsockname()[1] for s in self.silent]
        self.threads = [threading.Thread(target=self._serve, args=(s,)) for s in self.reply]

    def _bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((self.ip, 0))
        sock.settimeout(0.2)
        return sock

    def _serve(self, sock: socket.socket) -> None:
        while not self.stop.is_set():
            try:
                data, peer = sock.recvfrom(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            sock.sendto(b"pong " + data[:32], peer)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join()
        for s in self.reply + self.silent:
            s.close()


def test_it_keeps_coverage_per_protocol():
    coverage = coverage_parse("198.18.0.0/24", "22,80", "161,11211")
    assert coverage.covers_port(22) and not coverage.covers_port(22, "udp")
    assert coverage.covers_port(161, "udp") and not coverage.covers_port(161)
    tcp_only = coverage_parse("198.18.0.0/24", "1-65535")
    assert not tcp_only.covers_port(161, "udp")  # a TCP sweep never misses a UDP port

    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    net = (3323068416, 3323068671)
    spans = [Span(t0, (net,), ((1, 65535),))]  # every TCP port, long ago
    # UDP 161 was never covered: a first UDP sighting there is baseline, not news.
    assert first_covered(spans, net[0] + 5, 161, "udp") is None
    assert first_covered(spans, net[0] + 5, 161) == t0
    udp_span = Span(t0 + timedelta(days=5), (net,), ((161, 161),), "udp")
    assert not span_redundant(spans, udp_span)  # TCP 1-65535 does not hold UDP 161
    assert first_covered([*spans, udp_span], net[0] + 5, 161, "udp") == udp_span.at


def test_it_plans_udp_shards_of_their_own_size(db, settings):
    call_command("scope", "add", "127.0.0.0/8", "--zone", "internal")
    settings.PORTMON_UDP_SHARD_PROBES = 50
    run = run_start(targets="127.0.0.0/29", ports="1-1000", udp_ports="161,53,11211")
    shards = list(ScanShard.objects.filter(run=run).order_by("index"))
    tcp = [s for s in shards if s.proto == "tcp"]
    udp = [s for s in shards if s.proto == "udp"]
    assert len(tcp) == 1 and tcp[0].probes_total == 8000
    # 8 hosts x 3 UDP ports = 24 probes: one shard at 50 per shard, counted in probes.
    assert [s.ports for s in udp] == ["53,161,11211"] and udp[0].probes_total == 24
    assert run.udp_ports == "53,161,11211" and run.ports == "1-1000"

    settings.PORTMON_UDP_SHARD_PROBES = 6
    run = run_start(targets="127.0.1.0/29", ports="", udp_ports="53,161,11211")
    shards = list(ScanShard.objects.filter(run=run))
    assert {s.proto for s in shards} == {"udp"} and run.ports == ""
    assert sum(s.probes_total for s in shards) == 24 and max(s.probes_total for s in shards) <= 6


def test_it_refuses_a_run_with_no_ports_of_either_protocol(db):
    call_command("scope", "add", "127.0.0.0/8", "--zone", "internal")
    code, _, error = scan("127.0.0.2", "--ports", "", "--udp-ports", "")
    assert code == 1 and "no ports given" in error
    code, _, error = scan("127.0.0.2", "--udp-ports", "161,99999")
    assert code == 1 and "outside 1-65535" in error


def test_the_default_udp_list_is_the_policy_default(db):
    from scanner.models import ScanPolicy

    policy = ScanPolicy.objects.create(name="p", targets="127.0.0.2")
    assert policy.udp_ports == UDP_DEFAULT_PORTS
    assert {53, 69, 123, 161, 623, 1900, 5353, 11211} <= set(
        port_list(parse_ports(UDP_DEFAULT_PORTS))
    )


@pytest.mark.django_db(transaction=True)
def test_it_lists_only_the_udp_port_that_answers():
    call_command("scope", "add", "127.0.0.0/8", "--zone", "internal")
    with UdpServers("127.0.0.71", reply=2, silent=2) as servers:
        ports = [*servers.reply_ports, *servers.silent_ports, servers.closed_port]
        code, out, error = scan(
            "127.0.0.71",
            "--ports",
            "",
            "--udp-ports",
            ",".join(map(str, ports)),
            "--engine",
            "connect",
            "--no-fingerprint",
            "--local",
        )
    assert (code, error) == (0, "")
    for port in servers.reply_ports:
        assert f"{port:>5}/udp" in out
    for port in [*servers.silent_ports, servers.closed_port]:
        assert f"{port:>5}/udp" not in out  # silent: open|filtered; refused: closed
    assert "2 open port(s) on 1 host(s)" in out
    assert set(PortObservation.objects.values_list("proto", "port")) == {
        ("udp", p) for p in servers.reply_ports
    }


@pytest.mark.django_db(transaction=True)
def test_a_tcp_only_run_never_misses_a_udp_port(settings):
    """Adversarial: UDP port open, then TCP-only runs cover the host: it stays open, unmissed."""
    from alerts.services.diff import run_diff

    settings.PORTMON_CLOSED_AFTER_RUNS = 1
    call_command("scope", "add", "127.0.0.0/8", "--zone", "internal")
    with UdpServers("127.0.0.72", reply=1, silent=0) as servers:
        (udp_port,) = servers.reply_ports
        code, _, error = scan(
            "127.0.0.72", "--ports", "", "--udp-ports", str(udp_port), "--engine", "connect",
            "--no-fingerprint", "--local",
        )  # fmt: skip
        assert (code, error) == (0, "")
        for _ in range(2):
            code, _, error = scan(
                "127.0.0.72", "--ports", "1-100", "--engine", "connect", "--no-fingerprint",
                "--local",
            )  # fmt: skip
            assert code == 0, error
    from scanner.models import ScanRun

    for run in ScanRun.objects.order_by("pk"):
        run_diff(run_id=run.pk)
    port = Port.objects.get(proto="udp", port=udp_port)
    assert (port.state, port.missed_runs) == ("open", 0)
    assert set(CoverageSpan.objects.values_list("proto", flat=True)) == {"tcp", "udp"}


def test_a_rule_for_udp_161_leaves_tcp_161_alone():
    from alerts.rules import RuleSpec, Subject

    rule = RuleSpec(id=1, action="allow", port_lo=161, proto="udp")
    assert rule.matches(Subject(ip="198.18.0.5", proto="udp", port=161))
    assert not rule.matches(Subject(ip="198.18.0.5", proto="tcp", port=161))
