"""Raw-packet privileges of this process, read from its effective capability set.

uid 0 is neither needed nor enough: a sweep worker run by systemd as an unprivileged user
with AmbientCapabilities=CAP_NET_RAW may send raw packets, and root in a container or a
unit whose CapabilityBoundingSet drops CAP_NET_RAW may not. The kernel's CapEff says which.
Measured on masscan 1.3.2 against the namespace lab: CAP_NET_RAW alone is enough (it opens
its adapter with libpcap); CAP_NET_ADMIN is not needed.
"""

from pathlib import Path

# Bit numbers from linux/capability.h.
CAPABILITIES = {"CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13}
NEEDS_NET_RAW = (
    "masscan needs CAP_NET_RAW: run the sweep worker with AmbientCapabilities=CAP_NET_RAW "
    "or as root"
)


def parse_effective(status_text: str) -> int:
    """The CapEff mask from the text of /proc/<pid>/status (0 if the line is missing)."""
    for line in status_text.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def effective_capabilities(status_path: str = "/proc/self/status") -> int:
    try:
        return parse_effective(Path(status_path).read_text())
    except OSError:  # no procfs (odd container): assume nothing rather than guess
        return 0


def has_capability(name: str, mask: int | None = None) -> bool:
    """True if `name` (e.g. "CAP_NET_RAW") is in mask, by default this process's CapEff."""
    if mask is None:
        mask = effective_capabilities()
    return bool(mask & (1 << CAPABILITIES[name]))


def can_send_raw_packets() -> bool:
    return has_capability("CAP_NET_RAW")
