"""The lab itself: hosts answer as declared, nmap names the services, loss and safety hold.

Lab tests need root, `ip netns` and nftables; without them they fail with LabError's reason.
"""

import contextlib
import errno
import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.lab import BENCHMARK_LAB, Lab, LabError
from tests.lab import lab as lab_module
from tests.lab.plan import plan_truth
from tests.lab.services import (
    MYSQL_VERSION,
    SERVICES,
    http_response,
    mysql_handshake,
    redis_reply,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def connect(ip: str, port: int, timeout: float = 2.0) -> bytes:
    """Connect and return the first bytes the service sends (b"" if it waits for the client)."""
    with socket.create_connection((ip, port), timeout=timeout) as sock:
        sock.settimeout(0.3)
        try:
            return sock.recv(200)
        except TimeoutError:
            return b""


def connects(ip: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return True
    except OSError:
        return False


def nmap_versions(ip: str, ports: list[int]) -> dict[int, dict[str, str]]:
    argv = ["nmap", "-sV", "-Pn", "-n", "-p", ",".join(map(str, ports)), "-oX", "-", ip]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=True).stdout
    found = {}
    for port in ET.fromstring(out).iter("port"):
        service = port.find("service")
        found[int(port.get("portid"))] = {
            "state": port.find("state").get("state"),
            "service": service.get("name", "") if service is not None else "",
            "product": service.get("product", "") if service is not None else "",
            "version": service.get("version", "") if service is not None else "",
        }
    return found


def process_gone(pid: int | str, wait: float = 3.0) -> bool:
    """True once pid has exited (a zombie waiting for init to reap it counts as exited)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def lab():
    with Lab(hosts=30, ports_per_host=(2, 6), loss=0, seed=1) as running:
        yield running


# --- pure parts: no root needed --------------------------------------------------------------
def test_it_plans_the_same_hosts_and_ports_for_the_same_seed():
    network = ipaddress.ip_network("198.18.7.0/24")
    first = plan_truth(network=network, hosts=30, ports_per_host=(2, 6), seed=1)
    assert first == plan_truth(network=network, hosts=30, ports_per_host=(2, 6), seed=1)
    assert first != plan_truth(network=network, hosts=30, ports_per_host=(2, 6), seed=2)
    assert len(first) == 30
    assert all(ipaddress.ip_address(ip) in network for ip in first)
    assert all(2 <= len(ports) <= 6 for ports in first.values())
    ports = [port for host in first.values() for port in host]
    assert any(port < 1024 for port in ports) and any(port > 30000 for port in ports)
    assert {name for host in first.values() for name in host.values()} == set(SERVICES)


def test_it_sizes_the_benchmark_lab_like_the_design_measurements():
    truth = plan_truth(
        network=ipaddress.ip_network("198.18.1.0/24"),
        hosts=BENCHMARK_LAB["hosts"],
        ports_per_host=BENCHMARK_LAB["ports_per_host"],
        seed=BENCHMARK_LAB["seed"],
    )
    assert len(truth) == 62
    assert sum(len(ports) for ports in truth.values()) == 211


def test_it_answers_like_nginx_and_redis():
    assert http_response(b"GET / HTTP/1.0").startswith(b"HTTP/1.1 200 OK\r\nServer: nginx/")
    assert http_response(b"\x16\x03garbage").startswith(b"HTTP/1.1 400 Bad Request")
    assert redis_reply([b"PING"]) == b"+PONG\r\n"
    assert b"redis_version:" in redis_reply([b"INFO"])
    assert redis_reply([b"GET", b"/", b"HTTP/1.0"]) == (
        b"-ERR wrong number of arguments for 'get' command\r\n"
    )
    packet = mysql_handshake(7)
    assert int.from_bytes(packet[:3], "little") == len(packet) - 4
    assert b"MariaDB" in packet


def test_it_rejects_bad_arguments_before_touching_the_system():
    with pytest.raises(ValueError, match="hosts must be"):
        Lab(hosts=300)
    with pytest.raises(LabError, match="loss must be"):
        Lab(loss=1.5)


def test_it_explains_why_it_cannot_start_without_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(LabError, match="needs root"):
        Lab(hosts=2).start()


# --- the running lab -------------------------------------------------------------------------
@pytest.mark.lab
def test_it_accepts_a_connect_on_every_declared_port_and_refuses_others(lab):
    assert ipaddress.ip_network(lab.cidr).subnet_of(ipaddress.ip_network("198.18.0.0/15"))
    assert len(lab.hosts) == 30
    assert all(ipaddress.ip_address(ip) in ipaddress.ip_network(lab.cidr) for ip in lab.hosts)
    assert lab.open_ports == {(ip, p) for ip, ports in lab.truth.items() for p in ports}

    with ThreadPoolExecutor(32) as pool:
        ok = list(pool.map(lambda key: connects(*key, timeout=2), sorted(lab.open_ports)))
    assert all(ok), [key for key, good in zip(sorted(lab.open_ports), ok, strict=True) if not good]

    ip = lab.hosts[0]
    closed = next(port for port in range(1000, 2000) if port not in lab.truth[ip])
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((ip, closed), timeout=2)


@pytest.mark.lab
def test_it_greets_with_the_declared_banners(lab):
    greetings = {
        "ssh": b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n",
        "ftp": b"220 (vsFTPd 3.0.3)\r\n",
        "smtp": b"220 mail.lab.example ESMTP Postfix (Debian/GNU)\r\n",
    }
    keys = sorted(lab.open_ports)
    with ThreadPoolExecutor(32) as pool:
        first_bytes = dict(zip(keys, pool.map(lambda key: connect(*key), keys), strict=True))
    for (ip, port), received in first_bytes.items():
        name = lab.truth[ip][port]
        if name == "mysql":
            assert received[3:5] == b"\x00\x0a" and MYSQL_VERSION + b"\x00" in received
        else:
            # http and redis wait for the client, like the real ones.
            assert received == greetings.get(name, b""), (ip, port, name)


@pytest.mark.lab
def test_it_fingerprints_as_nmap_names_the_services(lab):
    # One port of each service, on as few hosts as possible, so nmap runs briefly.
    wanted: dict[str, list[int]] = {}
    covered: set[str] = set()
    for ip, ports in sorted(lab.truth.items(), key=lambda item: -len(set(item[1].values()))):
        new = {port for port, name in ports.items() if name not in covered}
        if new:
            wanted[ip] = sorted(new)
            covered |= {ports[port] for port in new}
    assert covered == set(SERVICES)

    with ThreadPoolExecutor(len(wanted)) as pool:
        results = dict(zip(wanted, pool.map(nmap_versions, wanted, wanted.values()), strict=True))
    for ip, ports in wanted.items():
        for port in ports:
            expected = {"state": "open", **lab.fingerprint(ip, port)}
            assert results[ip][port] == expected, (ip, port)


@pytest.mark.lab
def test_it_drops_inbound_packets_at_the_configured_rate(lab):
    targets = sorted(lab.open_ports)[:100]
    # 0.5 s is below the kernel's first SYN retransmission (1 s): a lost SYN is a failure.
    try:
        lab.set_loss(0.5)
        with ThreadPoolExecutor(50) as pool:
            ok = list(pool.map(lambda key: connects(*key, timeout=0.5), targets))
        seen, dropped = lab.packet_counts()
    finally:
        lab.set_loss(0)
    failed = ok.count(False) / len(ok)
    assert 0.3 <= failed <= 0.7, failed
    assert dropped > 0.3 * seen

    with ThreadPoolExecutor(50) as pool:
        assert all(pool.map(lambda key: connects(*key, timeout=0.5), targets))
    assert lab.packet_counts()[1] == 0


@pytest.mark.lab
def test_it_blackholes_the_rest_of_the_benchmark_range(lab):
    for outside in ("198.19.255.1", "198.18.0.1"):
        assert lab_module.route_for(outside) == {
            "type": "blackhole",
            "dst": "198.18.0.0/15",
            "flags": [],
        }
        # The kernel refuses at once (EINVAL for a blackhole route): nothing is sent.
        started = time.monotonic()
        with pytest.raises(OSError) as caught:
            socket.create_connection((outside, 80), timeout=3)
        assert caught.value.errno == errno.EINVAL
        assert time.monotonic() - started < 0.5
    route = lab_module.route_for(lab.hosts[0])
    assert (route["dst"], route["dev"]) == (lab.cidr, lab.interface)


def netdev_tables() -> list[str]:
    out = subprocess.run(["nft", "-j", "list", "tables", "netdev"], capture_output=True, text=True)
    return [t["table"]["name"] for t in json.loads(out.stdout)["nftables"] if "table" in t]


@pytest.mark.process
def test_it_guards_the_default_route_interface_and_no_veth(lab):
    default = json.loads(
        subprocess.run(
            ["ip", "-j", "route", "show", "default"], capture_output=True, text=True, check=True
        ).stdout
    )
    drops = lab.egress_drops()

    assert {route["dev"] for route in default} <= set(drops)
    assert lab.interface not in drops and not any(d.startswith("pmlab") for d in drops)
    assert lab.guard in netdev_tables()
    assert sum(drops.values()) == 0


@pytest.mark.lab
def test_its_teardown_removes_its_own_guard_and_leaves_another_table_alone():
    """An operator's own netdev table (a safety net of their own) outlives every lab."""
    foreign = f"pmtest_foreign_{os.getpid()}"
    subprocess.run(["nft", "add", "table", "netdev", foreign], check=True)
    try:
        with Lab(hosts=1, ports_per_host=(1, 1), seed=7) as lab:
            guard = lab.guard
            assert {foreign, guard} <= set(netdev_tables())
        assert foreign in netdev_tables() and guard not in netdev_tables()
    finally:
        subprocess.run(["nft", "delete", "table", "netdev", foreign], check=False)


@pytest.mark.lab
def test_its_egress_guard_drops_and_counts_masscans_raw_frames():
    # In a private namespace: masscan's frames meet the guard on a veth whose other end is
    # in the same namespace, so even a frame the guard missed would stay there.
    namespace = f"pmlab-guardtest-{os.getpid()}"
    setup = (
        "link add v0 type veth peer name v1\naddr add 198.19.254.1/24 dev v0\n"
        "link set v0 up\nlink set v1 up\nroute add 198.18.0.0/15 dev v0\n"
    )
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        subprocess.run(["ip", "-n", namespace, "-batch", "-"], input=setup, text=True, check=True)
        chains = lab_module.install_guard("pmlab_guardtest", ["v0"], netns=namespace)
        argv = [
            "ip", "netns", "exec", namespace, "masscan", "-p80-82", "--range", "198.18.9.9",
            "--adapter", "v0", "--adapter-ip", "198.19.254.1", "--router-mac", "02:00:00:00:00:01",
            "--rate", "100", "--wait", "0",
        ]  # fmt: skip
        # masscan 1.3.2 may wait for a packet to notice its end (the lab's heartbeat does
        # that); its 3 frames are out long before.
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(argv, capture_output=True, timeout=5)

        assert lab_module.guard_drops("pmlab_guardtest", chains, netns=namespace) == {"v0": 3}
    finally:
        subprocess.run(["ip", "netns", "del", namespace], check=False)


@pytest.mark.lab
def test_it_opens_and_closes_ports_live():
    with Lab(hosts=3, ports_per_host=(2, 2), seed=5) as lab:
        ip = lab.hosts[0]
        port = next(iter(lab.truth[ip]))
        lab.close_port(ip, port)
        assert port not in lab.truth[ip]
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((ip, port), timeout=2)

        lab.open_port(ip, 40021, service="ftp")
        assert lab.truth[ip][40021] == "ftp"
        assert (ip, 40021) in lab.open_ports
        assert connect(ip, 40021) == b"220 (vsFTPd 3.0.3)\r\n"

        with pytest.raises(LabError, match="already open"):
            lab.open_port(ip, 40021, service="http")
        with pytest.raises(LabError, match="not a host"):
            lab.open_port("198.19.255.1", 80)


@pytest.mark.lab
def test_it_works_with_masscan_using_the_lab_adapter_settings(tmp_path):
    with Lab(hosts=4, ports_per_host=(2, 4), seed=3) as lab:
        ports = sorted({port for _ip, port in lab.open_ports} | {1, 443, 9999})
        targets = tmp_path / "targets.txt"
        targets.write_text("\n".join(lab.hosts) + "\n")
        argv = [
            "masscan", "--includefile", str(targets), "-p", ",".join(map(str, ports)),
            "--rate", "5000", "--wait", "1", "-oL", str(tmp_path / "out.txt"),
            "--adapter", lab.interface, "--adapter-ip", lab.source_ip,
            "--router-mac", lab.router_mac,
        ]  # fmt: skip
        started = time.monotonic()
        # Without the lab's heartbeat masscan 1.3.2 would wait here forever on a quiet veth.
        subprocess.run(argv, capture_output=True, timeout=60, check=True)
        assert time.monotonic() - started < 20
        found = set()
        for line in (tmp_path / "out.txt").read_text().splitlines():
            if line.startswith("open tcp "):
                _open, _tcp, port, ip, _ts = line.split()
                found.add((ip, int(port)))
        assert found == lab.open_ports


@pytest.mark.lab
def test_it_runs_two_labs_side_by_side():
    with Lab(hosts=2, seed=1) as first, Lab(hosts=2, seed=1) as second:
        assert first.cidr != second.cidr
        assert first.namespace != second.namespace and first.interface != second.interface
        assert first.source_ip != second.source_ip
        first.close()
        # The other lab still needs the shared blackhole.
        assert lab_module.route_for("198.19.255.1").get("type") == "blackhole"
        assert all(connects(ip, port, timeout=2) for ip, port in second.open_ports)


@pytest.mark.lab
def test_it_tears_down_everything():
    started = time.monotonic()
    lab = Lab(hosts=62, ports_per_host=(1, 6), seed=1).start()
    assert time.monotonic() - started < 5
    namespace, interface, cidr = lab.namespace, lab.interface, lab.cidr
    server_pid, slot, guard = lab._server.pid, lab.slot, lab.guard
    assert namespace in namespaces() and link_exists(interface)
    assert guard in netdev_tables()

    lab.close()

    assert guard not in netdev_tables()

    assert namespace not in namespaces()
    assert not link_exists(interface)
    assert lab_module.route_for(cidr).get("dst") != cidr
    assert process_gone(server_pid)
    assert not list(lab_module.STATE_DIR.glob(f"slot-{slot}.*"))
    lab.close()  # twice is harmless


@pytest.mark.lab
def test_it_cleans_up_after_a_crashed_run():
    code = (
        "import time; from tests.lab import Lab\n"
        "lab = Lab(hosts=2).start()\n"
        "print(lab.namespace, lab.interface, lab._server.pid, lab.guard, flush=True)\n"
        "time.sleep(120)\n"
    )
    crashed = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        namespace, interface, server_pid, guard = crashed.stdout.readline().split()
    finally:
        crashed.kill()  # SIGKILL: no teardown runs
        crashed.wait()
        crashed.stdout.close()
    assert namespace in namespaces()

    with Lab(hosts=2) as lab:  # a new lab reaps the dead one's leftovers
        assert namespace not in namespaces() or lab.namespace == namespace
        assert process_gone(server_pid)
        states = [json.loads(p.read_text()) for p in lab_module.STATE_DIR.glob("slot-*[0-9].json")]
        assert all(lab_module._alive(s["pid"], s["pid_started"]) for s in states)
    assert namespace not in namespaces()
    assert not link_exists(interface)
    assert guard not in netdev_tables()
