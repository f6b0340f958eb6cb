"""The lab's service process: `ip netns exec NS python -m tests.lab.server SPEC.json`.

Listens on every (ip, port) of the spec with the named fake service, prints one JSON line
{"ready": true} when all are bound, then takes JSON commands on stdin, one per line:
{"op": "open", "ip": ..., "port": ..., "service": ...} or {"op": "close", "ip": ..., "port": ...},
answering {"ok": true} or {"ok": false, "error": ...}. It exits when stdin closes, so it never
outlives the Lab that started it.
"""

import asyncio
import contextlib
import json
import resource
import socket
import sys

from tests.lab.services import SERVICES
from tests.lab.udp_services import UDP_SERVICES


class UdpService(asyncio.DatagramProtocol):
    """One UDP port: replies with the service's handler; a silent one (None) never answers."""

    def __init__(self, handler) -> None:
        self.handler = handler
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        if self.handler is None:
            return
        try:
            reply = self.handler(data)
        except Exception:  # a malformed probe: a real daemon would drop it too
            reply = None
        if reply:
            self.transport.sendto(reply, addr)


BACKLOG = 1024
# masscan 1.3.2's receive thread notices the end of a scan only when a packet arrives; on a
# quiet veth it then waits forever ("waiting -N-secs"). A tiny broadcast keeps it ticking.
HEARTBEAT_INTERVAL = 0.1
HEARTBEAT_PORT = 9  # discard; a broadcast to a closed port draws no ICMP reply


async def heartbeat(broadcast: str) -> None:
    """Send one small UDP broadcast toward the root side every HEARTBEAT_INTERVAL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setblocking(False)
    while True:
        with contextlib.suppress(OSError):
            sock.sendto(b"lab heartbeat", (broadcast, HEARTBEAT_PORT))
        await asyncio.sleep(HEARTBEAT_INTERVAL)


class LabServer:
    def __init__(self) -> None:
        self.servers: dict[tuple[str, int], asyncio.Server] = {}
        self.connections: dict[tuple[str, int], set[asyncio.StreamWriter]] = {}
        self.udp: dict[tuple[str, int], asyncio.DatagramTransport] = {}

    async def udp_open(self, ip: str, port: int, service: str) -> None:
        """service: a name of UDP_SERVICES, or "" for a bound port that never answers."""
        if (ip, port) in self.udp:
            raise ValueError(f"{ip}:{port}/udp is already open")
        handler = UDP_SERVICES[service][1] if service else None
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: UdpService(handler), local_addr=(ip, port)
        )
        self.udp[(ip, port)] = transport

    async def udp_close(self, ip: str, port: int) -> None:
        transport = self.udp.pop((ip, port), None)
        if transport is None:
            raise ValueError(f"{ip}:{port}/udp is not open")
        transport.close()

    async def open(self, ip: str, port: int, service: str) -> None:
        if (ip, port) in self.servers:
            raise ValueError(f"{ip}:{port} is already open")
        handler = SERVICES[service].handler
        key = (ip, port)
        live = self.connections.setdefault(key, set())

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            live.add(writer)
            try:
                await handler(reader, writer)
            except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
                pass
            finally:
                live.discard(writer)
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

        self.servers[key] = await asyncio.start_server(
            serve, host=ip, port=port, backlog=BACKLOG, reuse_address=True
        )

    async def close(self, ip: str, port: int) -> None:
        server = self.servers.pop((ip, port), None)
        if server is None:
            raise ValueError(f"{ip}:{port} is not open")
        server.close()
        for writer in list(self.connections.pop((ip, port), ())):
            writer.close()


def _raise_fd_limit() -> None:
    # Hundreds of listeners plus the connections a scan leaves half-open.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _say(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def main(spec_path: str) -> None:
    _raise_fd_limit()
    with open(spec_path) as fh:
        spec = json.load(fh)
    lab = LabServer()
    try:
        for ip, port, service in spec["listen"]:
            await lab.open(ip, int(port), service)
        for ip, port, service in spec.get("udp", []):
            await lab.udp_open(ip, int(port), service)
    except (OSError, KeyError, ValueError) as exc:
        _say({"ready": False, "error": f"{type(exc).__name__}: {exc}"})
        return
    beat = asyncio.create_task(heartbeat(spec["heartbeat"])) if spec.get("heartbeat") else None
    _say({"ready": True, "listening": len(lab.servers)})

    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    while line := await stdin.readline():
        try:
            command = json.loads(line)
            if command["op"] == "open":
                await lab.open(command["ip"], int(command["port"]), command["service"])
            elif command["op"] == "close":
                await lab.close(command["ip"], int(command["port"]))
            elif command["op"] == "udp_open":
                await lab.udp_open(command["ip"], int(command["port"]), command["service"])
            elif command["op"] == "udp_close":
                await lab.udp_close(command["ip"], int(command["port"]))
            else:
                raise ValueError(f"unknown op {command['op']!r}")
        except (OSError, KeyError, ValueError) as exc:
            _say({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        else:
            _say({"ok": True})
    if beat is not None:
        beat.cancel()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
