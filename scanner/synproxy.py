"""Hosts that answer SYN-ACK on (nearly) every port: a SYN proxy, a tarpit or a middlebox.

Such a host says nothing about its real ports: a SYN proxy or a tarpit answers every SYN,
and an upstream middlebox may answer for a whole network. Listing its 65,535 "open" ports
would flood the digest, and fingerprinting them would start nmap on thousands of ports that
are not there. So a host whose open ports are more than `min_ports` AND more than
`min_share` of the ports probed on it is one host-level finding instead (IVRE tags such
hosts at 200 open ports with no real service). Pure logic over counts.
"""

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from scanner.findings import Finding

SUMMARY = "SYN proxy, tarpit or middlebox; ports not listed"
# Answers a host must have given before the share of open ones among them means anything:
# a real host's first open port may well come among its first few answers.
STREAM_MIN_ANSWERS = 100


@dataclass(frozen=True)
class Threshold:
    min_ports: int = 1000
    min_share: float = 0.05


def answers_all(*, open_count: int, probed: int, threshold: Threshold) -> bool:
    """Does a host with open_count open ports of probed answer on all ports?"""
    return open_count > threshold.min_ports and open_count > threshold.min_share * probed


def stream_ready(*, open_count: int, answered: int, threshold: Threshold) -> bool:
    """May this host's ports be recorded and fingerprinted before its sweep ends?

    Only when its open ports are a small share of the probes it answered so far (SYN-ACK or
    RST): a real host answers most probes with RSTs, a SYN proxy with SYN-ACKs. A host that
    does not qualify (yet) waits for the end of the sweep, where answers_all decides; that
    costs a host whose closed ports are filtered only its early fingerprint.
    """
    return answered >= STREAM_MIN_ANSWERS and open_count <= threshold.min_share * answered


@dataclass(frozen=True)
class Split:
    kept: list[Finding]
    # {ip: open ports} of the hosts that answer on all ports
    answering_all: dict[str, int]


def split(findings: Iterable[Finding], *, probed: int, threshold: Threshold) -> Split:
    """findings minus those of hosts that answer on all ports (counted per host, TCP only)."""
    findings = list(findings)
    counts = Counter(f.ip for f in findings if f.proto == "tcp")
    flagged = {
        ip: count
        for ip, count in counts.items()
        if answers_all(open_count=count, probed=probed, threshold=threshold)
    }
    if not flagged:
        return Split(findings, {})
    return Split([f for f in findings if f.ip not in flagged], flagged)


def summary(*, open_count: int, probed: int) -> str:
    """'4,213 of 65,535 ports probed: SYN proxy, ...' for the event and the digest."""
    return f"{open_count:,} of {probed:,} ports probed: {SUMMARY}"
