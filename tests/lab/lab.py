"""A network-namespace lab of fake hosts inside 198.18.0.0/15 (see the package docstring)."""

import atexit
import contextlib
import ctypes
import fcntl
import ipaddress
import json
import os
import random
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from tests.lab.plan import plan_truth
from tests.lab.services import SERVICES
from tests.lab.udp_services import SILENT_PORT, UDP_SERVICES

BENCH_RANGE = ipaddress.ip_network("198.18.0.0/15")  # RFC 2544; blackholed in the root ns
# Never given to a lab: the tests check that it is dropped by the blackhole route.
BLACKHOLE_PROBE = "198.19.255.1"
# Slot N owns 198.18.N.0/24 for hosts and 198.19.N.0/30 for the veth link.
SLOTS = range(1, 251)
PREFIX = "pmlab"
GUARD_PREFIX = "pmlab_guard_"
LAB_IFACE = "lab0"
ON_LINK_SOURCE = 254  # the scanner's last octet on an on-link lab's /24
STATE_DIR = Path("/run/portmon-lab")
REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_START_TIMEOUT = 20.0
COMMAND_TIMEOUT = 10.0
# The benchmark lab (bench/scan_bench.py, tests/lab/selfcheck.py): 62 hosts, 211 open ports,
# 0.5% loss: enough loss that one masscan pass misses ports at random.
BENCHMARK_LAB = {"hosts": 62, "ports_per_host": (1, 6), "loss": 0.005, "seed": 1}
# Packet loss granularity: numgen draws in [0, LOSS_SCALE), a draw below loss*LOSS_SCALE drops.
LOSS_SCALE = 1_000_000


class LabError(RuntimeError):
    """The lab cannot start or run; the message says why and what to fix."""


# ethtool ioctls (linux/ethtool.h) to switch segmentation offloads off without ethtool(8).
SIOCETHTOOL = 0x8946
ETHTOOL_SET_OFFLOAD = {"tso": 0x1F, "gso": 0x24, "gro": 0x2C}


# --- small helpers ---------------------------------------------------------------------------
def _run(argv: list[str], *, stdin: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise LabError(f"`{' '.join(argv)}` failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def _start_time(pid: int) -> str | None:
    """The kernel's start time of pid (to tell a live owner from a recycled pid), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int | None, started: str | None) -> bool:
    return bool(pid) and _start_time(pid) == started


def _kill(pid: int, started: str | None) -> None:
    """Kill one lab process (checked by pid and start time, so a recycled pid is left alone)."""
    if _alive(pid, started):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _names(slot: int) -> dict[str, str]:
    return {
        "namespace": f"{PREFIX}-{slot}",
        "interface": f"{PREFIX}{slot}",
        "cidr": f"198.18.{slot}.0/24",
        "source_ip": f"198.19.{slot}.1",
        "peer_ip": f"198.19.{slot}.2",
        # The lab's own nftables netdev table in the root namespace (see install_guard).
        "guard": f"{GUARD_PREFIX}{slot}",
    }


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """Serialise slot allocation, stale cleanup and the shared blackhole between processes."""
    STATE_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(STATE_DIR / "lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _slot_files() -> list[Path]:
    """The state files (slot-N.json), not the spec or log files next to them."""
    return sorted(
        p for p in STATE_DIR.glob("slot-*.json") if p.stem.removeprefix("slot-").isdigit()
    )


def _read_state(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _namespaces() -> list[str]:
    out = _run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _destroy_slot(
    slot: int, server_pid: int | None = None, server_started: str | None = None
) -> None:
    """Remove everything slot may have left: server, veth (and its route), namespace, files."""
    names = _names(slot)
    if server_pid:
        _kill(server_pid, server_started)
    if names["namespace"] in _namespaces():
        # Only lab processes run in a lab namespace (the server, or a tool a test ran there).
        for pid in _run(["ip", "netns", "pids", names["namespace"]], check=False).split():
            _kill(int(pid), _start_time(int(pid)))
    # Deleting the root end removes the pair and the lab route at once; a namespace delete
    # alone frees the veth only later, asynchronously.
    _run(["ip", "link", "del", names["interface"]], check=False)
    _run(["ip", "netns", "del", names["namespace"]], check=False)
    _run(["nft", "delete", "table", "netdev", names["guard"]], check=False)
    for suffix in (".json", ".spec.json", ".log"):
        with contextlib.suppress(FileNotFoundError):
            (STATE_DIR / f"slot-{slot}{suffix}").unlink()


def _cleanup_stale() -> set[int]:
    """Tear down labs whose owner process is gone; returns the slots of live labs. Locked."""
    live: set[int] = set()
    for path in _slot_files():
        state = _read_state(path)
        slot = state.get("slot")
        if slot is None:
            path.unlink(missing_ok=True)
        elif _alive(state.get("pid"), state.get("pid_started")):
            live.add(slot)
        else:
            _destroy_slot(slot, state.get("server_pid"), state.get("server_started"))
    # Leftovers of a crash between creating a namespace/link and writing the state file.
    for ns in _namespaces():
        probe_pid = ns.removeprefix(f"{PREFIX}-probe-")
        if probe_pid.isdigit() and not Path(f"/proc/{probe_pid}").exists():
            _run(["ip", "netns", "del", ns], check=False)
        slot_text = ns.removeprefix(f"{PREFIX}-")
        if ns.startswith(f"{PREFIX}-") and slot_text.isdigit() and int(slot_text) not in live:
            _destroy_slot(int(slot_text))
    for link in json.loads(_run(["ip", "-j", "link", "show"]) or "[]"):
        slot_text = link.get("ifname", "").removeprefix(PREFIX)
        if link.get("ifname", "").startswith(PREFIX) and slot_text.isdigit():
            if int(slot_text) not in live:
                _destroy_slot(int(slot_text))
    tables = json.loads(_run(["nft", "-j", "list", "tables", "netdev"]) or "{}")
    for item in tables.get("nftables", []):
        name = item.get("table", {}).get("name", "")
        slot_text = name.removeprefix(GUARD_PREFIX)
        if name.startswith(GUARD_PREFIX) and slot_text.isdigit() and int(slot_text) not in live:
            _destroy_slot(int(slot_text))
    return live


def _next_free_slot(live: set[int]) -> int:
    """The first free slot after the last one handed out. Locked."""
    # Round-robin so that a just-freed subnet and namespace name are not reused at once: a
    # concurrent test checking that its lab is gone must not see the next lab in its place.
    marker = STATE_DIR / "next-slot"
    try:
        start = int(marker.read_text())
    except (OSError, ValueError):
        start = SLOTS.start
    order = [s for s in SLOTS if s >= start] + [s for s in SLOTS if s < start]
    for slot in order:
        if slot not in live:
            marker.write_text(str(slot + 1))
            return slot
    raise LabError(f"all {len(SLOTS)} lab slots are in use")


def _ensure_blackhole() -> None:
    """Add the blackhole for 198.18.0.0/15 if absent; refuse to run if that range goes out."""
    routes = json.loads(_run(["ip", "-j", "route", "show", "exact", str(BENCH_RANGE)]) or "[]")
    if not routes:
        _run(["ip", "route", "add", "blackhole", str(BENCH_RANGE)])
        (STATE_DIR / "blackhole-owned").touch()
    elif any(route.get("type") != "blackhole" for route in routes):
        raise LabError(
            f"the root namespace routes {BENCH_RANGE} somewhere ({routes}); refusing to run a "
            "lab that could send probes off this machine. Remove that route first."
        )


def _drop_blackhole_if_last() -> None:
    """Remove the shared blackhole when no lab runs any more and a lab added it. Locked."""
    if not _cleanup_stale() and (STATE_DIR / "blackhole-owned").exists():
        _run(["ip", "route", "del", "blackhole", str(BENCH_RANGE)], check=False)
        (STATE_DIR / "blackhole-owned").unlink(missing_ok=True)


def route_for(ip: str) -> dict:
    """The root-namespace main-table route that carries ip (longest prefix), as ip -j shows it.

    `ip route get` cannot show a blackhole (the kernel answers EINVAL), hence the match list.
    """
    routes = json.loads(_run(["ip", "-j", "route", "show", "match", ip]) or "[]")

    def prefix_length(route: dict) -> int:
        dst = route.get("dst", "default")
        return 0 if dst == "default" else ipaddress.ip_network(dst, strict=False).prefixlen

    return max(routes, key=prefix_length, default={})


def _in(netns: str | None, argv: list[str]) -> list[str]:
    return argv if netns is None else ["ip", "netns", "exec", netns, *argv]


def guarded_interfaces() -> list[str]:
    """Root-namespace interfaces that can take frames off this machine: all but lo and veths.

    A veth leads to another namespace of this machine (a lab's, or another test's), so a
    frame on it stays here; filtering 198.18.0.0/15 there would break other labs instead.
    """
    links = json.loads(_run(["ip", "-d", "-j", "link", "show"]) or "[]")
    return [
        link["ifname"]
        for link in links
        if link.get("ifname") != "lo"
        and not link.get("ifname", "").startswith(PREFIX)
        and link.get("linkinfo", {}).get("info_kind") != "veth"
    ]


def install_guard(table: str, interfaces: list[str], netns: str | None = None) -> dict[str, str]:
    """A netdev egress filter on each interface: frames to 198.18.0.0/15 are counted, dropped.

    masscan writes raw frames that no route, blackhole or inet-family firewall stops; the
    egress hook of the device sees them (a lab sweep without adapter settings once sent
    1.08 million frames to the uplink). One chain per device,
    in the lab's own table: the lab removes its table only, never another's (an operator's
    own safety net).
    """
    chains = "".join(
        f' chain out{i} {{\n  type filter hook egress device "{name}" priority 0; '
        f"policy accept;\n  ip daddr {BENCH_RANGE} counter drop\n }}\n"
        for i, name in enumerate(interfaces)
    )
    _run(_in(netns, ["nft", "-f", "-"]), stdin=f"table netdev {table} {{\n{chains}}}\n")
    return {f"out{i}": name for i, name in enumerate(interfaces)}


def guard_drops(table: str, devices: dict[str, str], netns: str | None = None) -> dict[str, int]:
    """Frames each guarded interface dropped since the guard was installed: {device: count}.

    devices maps chain names to devices (install_guard's answer): nft 1.0.6's JSON omits
    a netdev chain's device.
    """
    out = _run(_in(netns, ["nft", "-j", "list", "table", "netdev", table]))
    drops: dict[str, int] = {}
    for item in json.loads(out)["nftables"]:
        rule = item.get("rule")
        if rule:
            for expr in rule.get("expr", []):
                if "counter" in expr:
                    device = devices.get(rule["chain"], rule["chain"])
                    drops[device] = drops.get(device, 0) + expr["counter"]["packets"]
    return drops


def disable_offloads(ifname: str) -> None:
    """Switch off TSO/GSO/GRO on ifname (what `ethtool -K IF tso off gso off gro off` does).

    With any of them on, libpcap sizes each ring frame for a 64 KiB packet, so masscan's
    default 2 MiB capture ring holds only 32 packets and drops SYN-ACKs whenever its receive
    thread falls behind: measured 66-86% recall at 100 kpps with no loss at all. Off, frames
    are MTU-sized (about 1,300 in the ring) and the same scan finds every port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for command in ETHTOOL_SET_OFFLOAD.values():
            request = ctypes.create_string_buffer(struct.pack("II", command, 0))
            ifreq = struct.pack("16sP", ifname.encode(), ctypes.addressof(request))
            fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq)


def check_prerequisites() -> None:
    """Raise LabError unless this process can build a lab (root, ip netns, nft)."""
    if os.geteuid() != 0:
        raise LabError("the network lab needs root (network namespaces, veth, nftables)")
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            raise LabError(f"the network lab needs `{tool}` on PATH (iproute2 / nftables)")
    probe = f"{PREFIX}-probe-{os.getpid()}"
    try:
        _run(["ip", "netns", "add", probe])
    except LabError as exc:
        raise LabError(f"`ip netns` does not work here: {exc}") from None
    try:
        _run(["ip", "netns", "exec", probe, "nft", "list", "ruleset"])
    except LabError as exc:
        raise LabError(f"nftables does not work in a network namespace: {exc}") from None
    finally:
        _run(["ip", "netns", "del", probe], check=False)


# --- the lab ---------------------------------------------------------------------------------
class Lab:
    """Fake hosts with real-banner services in a private network namespace; a context manager."""

    def __init__(
        self,
        hosts: int = 30,
        ports_per_host: tuple[int, int] = (2, 6),
        loss: float = 0.0,
        seed: int = 1,
        offloads: bool = False,
        on_link: bool = False,
        offsets: list[int] | None = None,
        udp_hosts: int = 0,
    ) -> None:
        # offloads=True keeps TSO/GSO on the root veth, as on most real NICs; masscan then
        # loses replies in its capture ring (see disable_offloads).
        # on_link=True puts the hosts on the scanner's own subnet (see _build): Portmon then
        # scans them with its connect scanner, not masscan. offsets: the hosts' last octets.
        self._validate_loss(loss)
        self.offloads = offloads
        self.on_link = on_link
        self.offsets = list(offsets) if offsets is not None else None
        if on_link and self.offsets and ON_LINK_SOURCE in self.offsets:
            raise LabError(f"offset {ON_LINK_SOURCE} is the scanner's address on an on-link lab")
        self.host_count = hosts
        self.ports_per_host = tuple(ports_per_host)
        self.loss = loss
        self.seed = seed
        self.slot: int | None = None
        self.namespace = self.interface = self.cidr = self.source_ip = self.router_mac = ""
        self.guard = ""  # the nftables netdev table of this lab's egress guard
        self._guarded: dict[str, str] = {}  # its chains' devices
        self.truth: dict[str, dict[int, str]] = {}
        # UDP: the first udp_hosts hosts each run three UDP services (udp_truth) and one
        # bound port that never answers (udp_silent); every other UDP port is closed.
        self.udp_hosts = udp_hosts
        self.udp_truth: dict[str, dict[int, str]] = {}
        self.udp_silent: set[tuple[str, int]] = set()
        self._server: subprocess.Popen | None = None
        self._log = None
        self._command_lock = threading.Lock()
        self._owner_pid = os.getpid()
        # Checked before any side effect so that a bad argument never leaves state behind.
        plan_truth(
            network=ipaddress.ip_network("198.18.0.0/24"),
            hosts=hosts,
            ports_per_host=self.ports_per_host,
            seed=seed,
            offsets=self.offsets,
        )
        if on_link and self.offsets is None and hosts > ON_LINK_SOURCE - 1:
            raise LabError(f"an on-link lab has at most {ON_LINK_SOURCE - 1} random hosts")

    # public read-only views
    @property
    def hosts(self) -> list[str]:
        return list(self.truth)

    @property
    def open_ports(self) -> set[tuple[str, int]]:
        return {(ip, port) for ip, ports in self.truth.items() for port in ports}

    @property
    def udp_open_ports(self) -> set[tuple[str, int]]:
        return {(ip, port) for ip, ports in self.udp_truth.items() for port in ports}

    def udp_open_port(self, ip: str, port: int, service: str) -> None:
        """Start a UDP service (tests.lab.udp_services name) on ip:port."""
        self._command({"op": "udp_open", "ip": ip, "port": port, "service": service})
        self.udp_truth.setdefault(ip, {})[port] = service

    def fingerprint(self, ip: str, port: int) -> dict[str, str]:
        """What nmap -sV reports for an open lab port: service, product, version."""
        return SERVICES[self.truth[ip][port]].fingerprint(port)

    def __enter__(self) -> "Lab":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Lab {self.cidr or 'stopped'} hosts={self.host_count} loss={self.loss}>"

    # lifecycle
    def start(self) -> "Lab":
        if self.slot is not None:
            raise LabError("this lab is already running")
        check_prerequisites()
        self._owner_pid = os.getpid()
        with _locked():
            live = _cleanup_stale()
            self.slot = _next_free_slot(live)
            self._write_state()
            _ensure_blackhole()
        atexit.register(self.close)
        try:
            self._build()
        except BaseException as exc:
            self.close()
            if isinstance(exc, LabError):
                raise
            raise LabError(f"lab start failed: {type(exc).__name__}: {exc}") from exc
        return self

    def close(self) -> None:
        """Tear everything down; safe to call twice and after a failed start."""
        if self.slot is None or os.getpid() != self._owner_pid:
            return  # a forked child must not tear down its parent's lab
        atexit.unregister(self.close)
        if self._server is not None:
            with contextlib.suppress(OSError):
                self._server.stdin.close()
            try:
                self._server.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self._server.kill()
                self._server.wait(timeout=5)
            self._server.stdout.close()
            self._server = None
        if self._log is not None:
            self._log.close()
            self._log = None
        drops, unread = {}, None
        if self.guard:
            try:
                drops = guard_drops(self.guard, self._guarded)
            except (LabError, ValueError, KeyError) as exc:
                unread = exc  # tear down first; an unread guard still fails the test
        with _locked():
            _destroy_slot(self.slot)
            _drop_blackhole_if_last()
        self.slot = None
        self.guard = ""
        if unread is not None:
            raise LabError(f"cannot read the egress guard's counters: {unread}")
        leaked = {device: count for device, count in drops.items() if count}
        if leaked:
            # The teardown assertion of every lab test: this means a probe (masscan's, most
            # likely) tried to leave the machine. Found after cleaning up, raised regardless.
            raise LabError(
                f"frames to {BENCH_RANGE} tried to leave this machine during the lab "
                f"(dropped by the egress guard: {leaked}); something ignored the lab's route"
            )

    def egress_drops(self) -> dict[str, int]:
        """Frames to 198.18.0.0/15 the egress guard dropped per interface since the lab began."""
        self._require_running()
        return guard_drops(self.guard, self._guarded)

    # runtime changes
    def set_loss(self, loss: float) -> None:
        """Drop this share of packets entering the lab at random (0 turns loss off)."""
        self._validate_loss(loss)
        self._require_running()
        self._apply_loss(loss)

    def packet_counts(self) -> tuple[int, int]:
        """(packets that entered the lab, packets the loss rule dropped) since the last set_loss."""
        self._require_running()
        out = _run(
            ["ip", "netns", "exec", self.namespace]
            + ["nft", "-j", "list", "chain", "inet", PREFIX, "inbound"]
        )
        counts = []
        for item in json.loads(out)["nftables"]:
            for expr in item.get("rule", {}).get("expr", []):
                if "counter" in expr:
                    counts.append(expr["counter"]["packets"])
        return counts[0], (counts[1] if len(counts) > 1 else 0)

    def open_port(self, ip: str, port: int, service: str = "http") -> None:
        """Start a service on ip:port now; truth follows."""
        if ip not in self.truth:
            raise LabError(f"{ip} is not a host of this lab ({self.cidr})")
        if service not in SERVICES:
            raise LabError(f"unknown service {service!r}; known: {', '.join(sorted(SERVICES))}")
        if not 1 <= port <= 65535:
            raise LabError(f"port {port} is out of range")
        self._command({"op": "open", "ip": ip, "port": port, "service": service})
        self.truth[ip][port] = service
        self.truth[ip] = dict(sorted(self.truth[ip].items()))

    def add_answer_all_host(self) -> str:
        """A new lab address that answers SYN-ACK on every port (the kernel's SYN proxy).

        nftables' synproxy statement answers each SYN with a cookie SYN-ACK before any
        socket is looked up, as a firewall's SYN proxy does; no listener is involved.
        Returns its address (not in truth: it has no real service).
        """
        self._require_running()
        ip = str(ipaddress.ip_network(self.cidr).network_address + 250)
        if ip in self.truth:
            raise LabError(f"{ip} is already a host of this lab")
        ns = self.namespace
        _run(["ip", "-n", ns, "addr", "add", f"{ip}/32", "dev", LAB_IFACE])
        _run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv4.tcp_syncookies=1"])
        _run(
            ["ip", "netns", "exec", ns, "sysctl", "-q", "-w"]
            + ["net.netfilter.nf_conntrack_tcp_loose=0"]
        )
        rules = (
            f"table inet {PREFIX}_synproxy {{\n"
            " chain pre { type filter hook prerouting priority raw; policy accept;\n"
            f"  ip daddr {ip} tcp flags syn notrack\n }}\n"
            " chain inp { type filter hook input priority filter; policy accept;\n"
            f"  ip daddr {ip} tcp flags syn ct state invalid,untracked "
            "synproxy mss 1460 wscale 7 timestamp sack-perm\n"
            f"  ip daddr {ip} ct state invalid drop\n }}\n}}\n"
        )
        _run(["ip", "netns", "exec", ns, "nft", "-f", "-"], stdin=rules)
        return ip

    def close_port(self, ip: str, port: int) -> None:
        """Stop the service on ip:port now (connections get a RST); truth follows."""
        if port not in self.truth.get(ip, {}):
            raise LabError(f"{ip}:{port} is not open in this lab")
        self._command({"op": "close", "ip": ip, "port": port})
        del self.truth[ip][port]

    # internals
    @staticmethod
    def _validate_loss(loss: float) -> None:
        if not 0 <= loss < 1:
            raise LabError(f"loss must be in [0, 1), got {loss}")

    def _apply_loss(self, loss: float) -> None:
        rules = [
            f"flush chain inet {PREFIX} inbound",
            f'add rule inet {PREFIX} inbound iifname "{LAB_IFACE}" counter',
        ]
        threshold = round(loss * LOSS_SCALE)
        if threshold:
            rules.append(
                f'add rule inet {PREFIX} inbound iifname "{LAB_IFACE}" '
                f"numgen random mod {LOSS_SCALE} lt {threshold} counter drop"
            )
        _run(["ip", "netns", "exec", self.namespace, "nft", "-f", "-"], stdin="\n".join(rules))
        self.loss = loss

    def _require_running(self) -> None:
        if self.slot is None or self._server is None:
            raise LabError("the lab is not running (use `with Lab(...) as lab:`)")

    def _state_path(self, suffix: str = ".json") -> Path:
        return STATE_DIR / f"slot-{self.slot}{suffix}"

    def _write_state(self, **extra: object) -> None:
        state = {
            "slot": self.slot,
            "pid": os.getpid(),
            "pid_started": _start_time(os.getpid()),
            "created": time.time(),
            **extra,
        }
        tmp = self._state_path(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(self._state_path())

    def _build(self) -> None:
        names = _names(self.slot)
        self.namespace, self.interface = names["namespace"], names["interface"]
        self.cidr, self.source_ip = names["cidr"], names["source_ip"]
        ns, root_if, peer_ip = self.namespace, self.interface, names["peer_ip"]
        if self.on_link:
            self.source_ip = str(ipaddress.ip_network(self.cidr).network_address + ON_LINK_SOURCE)
        # Before anything could send to the lab: see install_guard.
        self._guarded = install_guard(names["guard"], guarded_interfaces())
        self.guard = names["guard"]
        offsets = self.offsets
        if self.on_link and offsets is None:
            # Random hosts never take the scanner's own address (.254): draw from .1-.253.
            offsets = random.Random(self.seed).sample(range(1, ON_LINK_SOURCE), self.host_count)
        self.truth = plan_truth(
            network=ipaddress.ip_network(self.cidr),
            hosts=self.host_count,
            ports_per_host=self.ports_per_host,
            seed=self.seed,
            offsets=offsets,
        )

        _run(["ip", "netns", "add", ns])
        _run(["ip", "link", "add", root_if, "type", "veth", "peer", "name", LAB_IFACE, "netns", ns])
        # No IPv6 on the link: no router solicitations or DAD chatter next to masscan's traffic.
        Path(f"/proc/sys/net/ipv6/conf/{root_if}/disable_ipv6").write_text("1")
        if not self.offloads:
            disable_offloads(root_if)
        if self.on_link:
            # The scanner's side is .254/24 of the hosts' subnet: the kernel's route to them
            # has no gateway (on-link), each host answers ARP for its own address.
            _run(["ip", "addr", "add", f"{self.source_ip}/24", "dev", root_if])
        else:
            _run(["ip", "addr", "add", f"{self.source_ip}/30", "dev", root_if])
        _run(["ip", "link", "set", root_if, "up"])
        # The lab knows only its link: it can answer the root side and nothing else.
        lab_batch = [
            *(f"addr add {ip}/32 dev {LAB_IFACE}" for ip in self.truth),
            f"link set {LAB_IFACE} up",
            "link set lo up",
        ]
        if self.on_link:  # the way back to the scanner: on the link, no gateway
            lab_batch.append(f"route add {self.source_ip}/32 dev {LAB_IFACE}")
        else:
            lab_batch.insert(0, f"addr add {peer_ip}/30 dev {LAB_IFACE}")
        _run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"])
        _run(["ip", "-n", ns, "-batch", "-"], stdin="\n".join(lab_batch) + "\n")
        # Every closed UDP port answers ICMP port unreachable (no 1/s token bucket), so
        # that a test can tell "closed" from "silent".
        _run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv4.icmp_ratelimit=0"])
        if not self.on_link:
            _run(
                ["ip", "route", "add", self.cidr, "via", peer_ip]
                + ["dev", root_if, "src", self.source_ip]
            )
            link = json.loads(_run(["ip", "-j", "-n", ns, "link", "show", LAB_IFACE]))
            self.router_mac = link[0]["address"]

        chain = (
            f"table inet {PREFIX} {{\n chain inbound {{\n"
            "  type filter hook prerouting priority raw; policy accept;\n }\n}\n"
        )
        _run(["ip", "netns", "exec", ns, "nft", "-f", "-"], stdin=chain)
        self._apply_loss(self.loss)
        self._check_blackhole()
        self._start_server()

    def _check_blackhole(self) -> None:
        route = route_for(BLACKHOLE_PROBE)
        if route.get("type") != "blackhole":
            raise LabError(
                f"{BLACKHOLE_PROBE} is not blackholed in the root namespace (route {route}); "
                "refusing to run the lab"
            )

    def _start_server(self) -> None:
        spec_path = self._state_path(".spec.json")
        listen = [
            [ip, port, name] for ip, ports in self.truth.items() for port, name in ports.items()
        ]
        broadcast = ipaddress.ip_network(f"{self.source_ip}/30", strict=False).broadcast_address
        # The heartbeat is for masscan on a routed lab; an on-link lab is the connect scanner's.
        heartbeat = "" if self.on_link else str(broadcast)
        names = sorted(UDP_SERVICES)
        udp = []
        for i, ip in enumerate(list(self.truth)[: self.udp_hosts]):
            services = [names[(i + k) % len(names)] for k in range(3)]
            self.udp_truth[ip] = {UDP_SERVICES[name][0]: name for name in services}
            udp += [[ip, port, name] for port, name in self.udp_truth[ip].items()]
            udp.append([ip, SILENT_PORT, ""])
            self.udp_silent.add((ip, SILENT_PORT))
        spec_path.write_text(json.dumps({"listen": listen, "heartbeat": heartbeat, "udp": udp}))
        self._log = open(self._state_path(".log"), "w")
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
        self._server = subprocess.Popen(
            ["ip", "netns", "exec", self.namespace, sys.executable, "-m", "tests.lab.server"]
            + [str(spec_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=REPO_ROOT,
            env=env,
            text=True,
        )
        # `ip netns exec` execs the command, so this pid is the server itself.
        self._write_state(server_pid=self._server.pid, server_started=_start_time(self._server.pid))
        ready = self._read_reply(SERVER_START_TIMEOUT)
        if not ready.get("ready"):
            log = self._state_path(".log").read_text()[-2000:]
            raise LabError(f"lab server did not start: {ready.get('error', '')} {log}".strip())

    def _read_reply(self, timeout: float) -> dict:
        stdout = self._server.stdout
        readable, _, _ = select.select([stdout], [], [], timeout)
        line = stdout.readline() if readable else ""
        if not line:
            code = self._server.poll()
            raise LabError(f"lab server gave no answer in {timeout:.0f}s (exit code {code})")
        return json.loads(line)

    def _command(self, command: dict) -> None:
        self._require_running()
        with self._command_lock:
            self._server.stdin.write(json.dumps(command) + "\n")
            self._server.stdin.flush()
            reply = self._read_reply(COMMAND_TIMEOUT)
        if not reply.get("ok"):
            raise LabError(f"lab server refused {command}: {reply.get('error')}")
