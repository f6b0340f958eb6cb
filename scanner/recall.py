"""Which probes of a sweep got no answer at all: the ones to probe again.

A SYN probe is answered by a SYN-ACK (open) or an RST (closed). A probe with neither was
lost on the way (or its reply was), or the port is filtered. Re-probing only those costs a
fraction of a second full pass (retries) and finds the ports that loss hid. Pure logic.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field

from scanner.targets import PortRanges, count_ports

# A host with more unanswered probes than this (share of its ports) filters traffic; probing
# each port again would mostly wait on timeouts, so it gets a second sweep instead.
EXACT_REPROBE_MAX_SHARE = 0.05
EXACT_REPROBE_MIN = 64


class ProbeLedger:
    """One bit per (host, port) probe of a shard: about 1 MB for 8M probes.

    Each host's row starts on a byte boundary, so a row of answered probes is mostly 0xFF
    bytes that the scan for gaps skips eight probes at a time.
    """

    def __init__(self, addresses: Iterable[str], ports: PortRanges):
        self.hosts = {ip: i for i, ip in enumerate(addresses)}
        self.ports = [port for lo, hi in ports for port in range(lo, hi + 1)]
        self.n_ports = count_ports(ports)
        self.port_index = [-1] * 65536
        for i, port in enumerate(self.ports):
            self.port_index[port] = i
        self.stride = (self.n_ports + 7) // 8
        self.bits = bytearray(len(self.hosts) * self.stride)

    def mark(self, ip: str, port: int) -> None:
        self.mark_many(((ip, port),))

    def mark_many(self, answers: Iterable[tuple[str, int]]) -> None:
        """mark() for a batch: the sweep's hot path (a call per probe of a full-range scan)."""
        hosts, port_index, bits, stride = self.hosts, self.port_index, self.bits, self.stride
        for ip, port in answers:
            host = hosts.get(ip)
            if host is not None and 0 < port < 65536:
                index = port_index[port]
                if index >= 0:
                    bits[host * stride + (index >> 3)] |= 1 << (index & 7)

    def unanswered(self, ip: str) -> list[int]:
        row = self.hosts[ip] * self.stride
        missing = []
        for offset, byte in enumerate(self.bits[row : row + self.stride]):
            if byte == 0xFF:
                continue
            for bit in range(8):
                index = offset * 8 + bit
                if index < self.n_ports and not (byte >> bit) & 1:
                    missing.append(self.ports[index])
        return missing


@dataclass
class ReprobePlan:
    exact: list[tuple[str, int]] = field(default_factory=list)  # probe these (ip, port) again
    rescan: list[str] = field(default_factory=list)  # hosts that filter: sweep them again
    silent: list[str] = field(default_factory=list)  # no answer at all: down or dropping all


def reprobe_plan(ledger: ProbeLedger) -> ReprobePlan:
    plan = ReprobePlan()
    limit = max(EXACT_REPROBE_MIN, int(ledger.n_ports * EXACT_REPROBE_MAX_SHARE))
    for ip in ledger.hosts:
        missing = ledger.unanswered(ip)
        if len(missing) == ledger.n_ports:
            plan.silent.append(ip)
        elif len(missing) <= limit:
            plan.exact.extend((ip, port) for port in missing)
        else:
            plan.rescan.append(ip)
    return plan
