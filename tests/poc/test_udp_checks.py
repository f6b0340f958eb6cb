"""UDP PoC checks against the lab's UDP responders on loopback: a read that works is a
finding; silence, ICMP unreachable or a refusal never is."""

import socket
import threading

import pytest

from poc.checks import CheckError, Target, check_get, checks_for
from tests.lab import udp_services


class Responder:
    def __init__(self, handler, ip: str = "127.0.0.81"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, 0))
        self.sock.settimeout(0.1)
        self.ip, self.port = self.sock.getsockname()
        self.handler, self.stop = handler, threading.Event()
        self.thread = threading.Thread(target=self._serve)

    def _serve(self):
        while not self.stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            reply = self.handler(data) if self.handler else None
            if reply:
                self.sock.sendto(reply, peer)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.sock.close()


def run(name: str, responder: Responder, timeout: float = 1.0):
    check = check_get(name)
    return check.run(check, Target(ip=responder.ip, port=responder.port, timeout=timeout))


def test_it_reads_sysdescr_with_community_public():
    with Responder(udp_services.snmp) as r:
        verdict = run("snmp_public", r)
    assert verdict.vulnerable and verdict.severity == "high"
    assert udp_services.SNMP_SYSDESCR.decode() in verdict.evidence


def test_it_reads_memcached_stats_and_ntp_version_over_udp():
    with Responder(udp_services.memcached) as r:
        verdict = run("memcached_udp_stats", r)
    assert verdict.vulnerable and "STAT version 1.6.18" in verdict.evidence
    with Responder(udp_services.ntp) as r:
        verdict = run("ntp_mode6_readvar", r)
    assert verdict.vulnerable and "ntpd 4.2.8p15" in verdict.evidence


def test_silence_and_refusal_are_no_finding():
    """Adversarial: a port that stays silent (wrong community, a firewall) or is closed."""
    with Responder(None) as r:
        with pytest.raises(CheckError, match="no UDP answer"):
            run("snmp_public", r, timeout=0.5)
    closed = Responder(None)
    closed.sock.close()  # nothing bound there any more: ICMP port unreachable
    with pytest.raises(CheckError, match="closed"):
        run("snmp_public", closed, timeout=0.5)
    # An answer to someone else's request (another request id) proves nothing.
    with Responder(lambda data: udp_services.snmp(data.replace(data[17:21], b"\0\0\0\1"))) as r:
        with pytest.raises(CheckError):
            run("snmp_public", r, timeout=0.5)


def test_udp_checks_apply_to_udp_ports_only():
    assert [c.name for c in checks_for(service="snmp", port=161, proto="udp")] == ["snmp_public"]
    assert checks_for(service="", port=161, proto="tcp") == []
    assert "memcached_stats" not in [
        c.name for c in checks_for(service="", port=11211, proto="udp")
    ]


@pytest.mark.process
def test_the_poc_command_runs_udp_checks_with_udp(db):
    from io import StringIO

    from django.core.management import call_command
    from django.core.management.base import CommandError

    from poc.models import PocResult

    call_command("scope", "add", "127.0.0.0/8", "--zone", "internal")
    with Responder(udp_services.snmp) as r:
        out = StringIO()
        call_command("poc", f"{r.ip}:{r.port}", "--udp", "--check", "snmp_public", stdout=out)
        with pytest.raises(CommandError, match="udp check; add --udp"):
            call_command("poc", f"{r.ip}:{r.port}", "--check", "snmp_public")
    assert "snmp_public: VULNERABLE [high]" in out.getvalue()
    assert PocResult.objects.get().proto == "udp"
