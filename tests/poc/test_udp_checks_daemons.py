"""UDP PoC checks against Debian's real daemons in a lab namespace: net-snmp's snmpd
(community public, then only a private one) and memcached with UDP on."""

import subprocess
import time

import pytest

from poc.checks import CheckError, Target, check_get
from tests.lab import Lab


def run_check(name: str, ip: str, port: int, *, wait: float = 10.0):
    """The check's verdict, retried while the daemon starts (CheckError until it answers)."""
    check = check_get(name)
    deadline = time.monotonic() + wait
    while True:
        try:
            return check.run(check, Target(ip=ip, port=port, timeout=1.0))
        except CheckError:
            if time.monotonic() > deadline:
                raise


def daemon(lab: Lab, argv: list[str], log) -> subprocess.Popen:
    return subprocess.Popen(
        ["ip", "netns", "exec", lab.namespace, *argv], stdout=log, stderr=subprocess.STDOUT
    )


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.mark.lab
def test_it_reads_sysdescr_from_net_snmp_with_public_and_not_without(tmp_path):
    with Lab(hosts=1, ports_per_host=(0, 0), seed=31) as lab:
        [ip] = lab.hosts
        for community, readable in (("public", True), ("s3cret-ro", False)):
            conf = tmp_path / f"snmpd-{community}.conf"
            conf.write_text(f"agentaddress udp:{ip}:161\nrocommunity {community} default\n")
            argv = ["snmpd", "-f", "-Lo", "-C", "-c", str(conf), "-p", str(tmp_path / "pid")]
            with (tmp_path / "snmpd.log").open("a") as log:
                proc = daemon(lab, argv, log)
            try:
                if readable:
                    verdict = run_check("snmp_public", ip, 161)
                    assert verdict.vulnerable and "Linux" in verdict.evidence
                else:
                    time.sleep(2)  # started: its answer to public would be a finding
                    # Wrong community: snmpd stays silent, which proves nothing.
                    with pytest.raises(CheckError, match="no UDP answer"):
                        run_check("snmp_public", ip, 161, wait=0)
            finally:
                stop(proc)


@pytest.mark.lab
def test_it_reads_memcached_stats_over_udp(tmp_path):
    with Lab(hosts=1, ports_per_host=(0, 0), seed=32) as lab:
        [ip] = lab.hosts
        argv = ["memcached", "-u", "root", "-l", ip, "-p", "11211", "-U", "11211"]
        with (tmp_path / "memcached.log").open("w") as log:
            proc = daemon(lab, argv, log)
        try:
            verdict = run_check("memcached_udp_stats", ip, 11211)
        finally:
            stop(proc)
    assert verdict.vulnerable and "STAT version" in verdict.evidence
