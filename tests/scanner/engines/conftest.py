"""Fixtures for engine tests: loopback listeners and services, a small namespace lab."""

import asyncio
import contextlib
import os
import socket
import threading
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
SLOW_REPLY_S = 8
SSH_BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"
HTTP_REPLY = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nContent-Type: text/html\r\n"
    b"Content-Length: 13\r\nConnection: close\r\n\r\n<h1>lab</h1>\n"
)


def listening_ports() -> set[int]:
    """Ports with a listening TCP socket on this machine (any address), from /proc."""
    ports = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(name) as fh:
            for line in list(fh)[1:]:
                fields = line.split()
                if fields[3] == "0A":  # TCP_LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def free_port_block(size: int, start: int = 41000) -> int:
    """First port of a block of `size` ports where nothing listens (so results are ours)."""
    busy = listening_ports()
    for base in range(start, 60000, size):
        if not busy.intersection(range(base, base + size)):
            return base
    raise RuntimeError("no free port block")


@pytest.fixture
def listeners():
    """Open plain listening sockets: listeners(ip, port) -> socket; all closed afterwards."""
    opened = []

    def listen(ip: str, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((ip, port))
        sock.listen(512)
        opened.append(sock)
        return sock

    yield listen
    for sock in opened:
        sock.close()


class ServiceThread:
    """asyncio services (ssh banner, http, silent) on loopback, in a background thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.servers = []

    def start(self, kind, host: str, port: int = 0) -> int:
        """kind: a name below, or an asyncio connection handler of the test's own."""
        handler = kind if callable(kind) else KINDS[kind]
        server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(handler, host, port), self.loop
        ).result(5)
        self.servers.append(server)
        return server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def close_all():
            for server in self.servers:
                server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close_all(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


async def _ssh(reader, writer):
    with contextlib.suppress(Exception):
        writer.write(SSH_BANNER)
        await writer.drain()
        await asyncio.wait_for(reader.read(256), 10)
    writer.close()


async def _http(reader, writer):
    with contextlib.suppress(Exception):
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        writer.write(HTTP_REPLY)
        await writer.drain()
    writer.close()


async def _slow(reader, writer):
    # An HTTP server that answers each request after SLOW_REPLY_S: later than nmap waits
    # for any probe's answer (5-7.5 s), so nmap goes through all its probes (164 s).
    with contextlib.suppress(Exception):
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        await asyncio.sleep(SLOW_REPLY_S)
        writer.write(HTTP_REPLY)
        await writer.drain()
    writer.close()


async def _silent(reader, writer):
    # Accepts and never speaks: nmap -sV waits for it until its host timeout.
    with contextlib.suppress(Exception):
        await asyncio.sleep(3600)
    writer.close()


KINDS = {"ssh": _ssh, "http": _http, "silent": _silent, "slow": _slow}


@pytest.fixture
def services():
    svc = ServiceThread()
    yield svc
    svc.stop()


def masscan_pids() -> set[int]:
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/comm") as fh:
                if fh.read().strip() == "masscan":
                    pids.add(int(entry))
    return pids


def cmdline(pid: int) -> list[str]:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as fh:
        return [part.decode() for part in fh.read().split(b"\0") if part]
    return []


def sweep_args(
    *,
    targets,
    ports,
    proto="tcp",
    exclude=(),
    deadline=None,
    timeout=None,
    retries=None,
    concurrency=None,
    on_progress=None,
    on_finding=None,
    on_answers=None,
):
    """(SweepOptions, SweepEvents) for the probers (connect, udp): timeout, retries and
    concurrency are the prober's, each its default for proto when not given."""
    from dataclasses import replace

    from scanner.engines.options import CONNECT_PROBES, UDP_PROBES, SweepEvents, SweepOptions

    probes = UDP_PROBES if proto == "udp" else CONNECT_PROBES
    given = {"timeout": timeout, "retries": retries, "concurrency": concurrency}
    probes = replace(probes, **{k: v for k, v in given.items() if v is not None})
    options = SweepOptions(
        targets=targets,
        ports=ports,
        proto=proto,
        exclude=exclude,
        deadline=deadline,
        probes=probes,
    )
    return options, SweepEvents(progress=on_progress, finding=on_finding, answers=on_answers)


def masscan_args(
    *,
    targets,
    ports,
    timeout,
    proto="tcp",
    exclude=(),
    plan=None,
    on_progress=None,
    on_finding=None,
    on_answers=None,
    on_link_answers=None,
    **knobs,
):
    """(SweepOptions, SweepEvents) for masscan.sweep: timeout is the sweep's budget in
    seconds; knobs (rate, retries, wait, interface, source_ip, router_mac) masscan's."""
    import time

    from scanner.engines.options import MasscanOptions, SweepEvents, SweepOptions

    options = SweepOptions(
        targets=targets,
        ports=ports,
        proto=proto,
        exclude=exclude,
        deadline=time.monotonic() + timeout,
        masscan=MasscanOptions(**knobs),
        plan=plan,
    )
    events = SweepEvents(
        progress=on_progress, finding=on_finding, answers=on_answers, link_answers=on_link_answers
    )
    return options, events
