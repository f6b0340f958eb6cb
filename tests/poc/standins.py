"""Stand-ins for services Debian does not package (`python -m tests.poc.standins KIND IP PORT
[--auth]`): just enough of each protocol for the PoC checks, open or closed to anonymous
clients. Run inside a lab namespace; exits when its parent's pipe (stdin) closes.

Kinds: elasticsearch, docker, zookeeper, mongodb, hang (accepts, reads, never answers).
"""

import asyncio
import json
import struct
import sys

from poc.checks.mongodb import OP_MSG, bson_decode, bson_encode

ES_ROOT = {
    "name": "node-1",
    "cluster_name": "lab-logs",
    "version": {"number": "8.11.3", "lucene_version": "9.8.0"},
    "tagline": "You Know, for Search",
}
ES_INDICES = [
    {"index": "customers", "docs.count": "1200"},
    {"index": "audit-2026.11", "docs.count": "88"},
]
DOCKER_VERSION = {
    "Version": "24.0.7",
    "ApiVersion": "1.43",
    "Os": "linux",
    "KernelVersion": "6.1.0",
}
ZK_SRVR = (
    b"Zookeeper version: 3.8.0-5a02a05eddb59aee6ac762f7ea82e92a68eb9c0f, built on 2022-02-25\n"
    b"Latency min/avg/max: 0/0.0/0\nReceived: 3\nSent: 2\nConnections: 1\nOutstanding: 0\n"
    b"Zxid: 0x0\nMode: standalone\nNode count: 5\n"
)
ZK_DENIED = b"srvr is not executed because it is not in the whitelist.\n"


def http(status: str, body: dict | list | str, extra: str = "") -> bytes:
    data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        f"{extra}Connection: close\r\n\r\n"
    ).encode() + data


async def read_request(reader: asyncio.StreamReader) -> str:
    line = await reader.readline()
    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
        pass
    parts = line.decode("latin-1").split()
    return parts[1] if len(parts) > 1 else ""


def serve(kind: str, auth: bool):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if kind == "hang":
                await reader.read(1024)
                await asyncio.sleep(3600)
            elif kind == "elasticsearch":
                path = await read_request(reader)
                if auth:
                    writer.write(http("401 Unauthorized", {"error": "security_exception"},
                                      'WWW-Authenticate: Basic realm="security"\r\n'))  # fmt: skip
                elif path.startswith("/_cat/indices"):
                    writer.write(http("200 OK", ES_INDICES))
                else:
                    writer.write(http("200 OK", ES_ROOT))
            elif kind == "docker":
                await read_request(reader)
                writer.write(
                    http("403 Forbidden", {"message": "authorization denied by plugin"})
                    if auth
                    else http("200 OK", DOCKER_VERSION)
                )
            elif kind == "zookeeper":
                await reader.readexactly(4)
                writer.write(ZK_DENIED if auth else ZK_SRVR)
            elif kind == "mongodb":
                header = await reader.readexactly(16)
                length, request_id, _, opcode = struct.unpack("<iiii", header)
                body = await reader.readexactly(length - 16)
                command = bson_decode(body[5:]) if opcode == OP_MSG else {}
                if auth or "listDatabases" not in command:
                    reply = {"ok": 0.0, "errmsg": "command listDatabases requires authentication",
                             "code": 13, "codeName": "Unauthorized"}  # fmt: skip
                else:
                    reply = {"databases": [{"name": "admin"}, {"name": "crm"}], "ok": 1.0}
                payload = struct.pack("<I", 0) + b"\x00" + bson_encode(reply)
                writer.write(
                    struct.pack("<iiii", 16 + len(payload), 7, request_id, OP_MSG) + payload
                )
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    return handle


async def main(kind: str, ip: str, port: int, auth: bool) -> None:
    server = await asyncio.start_server(serve(kind, auth), host=ip, port=port, reuse_address=True)
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    await stdin.read()  # until the test closes our stdin (or dies)
    server.close()


if __name__ == "__main__":
    kind, ip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    asyncio.run(main(kind, ip, port, "--auth" in sys.argv[4:]))
