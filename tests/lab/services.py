"""Fake services for the lab: just enough protocol for nmap -sV to name them like real ones.

Each banner was checked against nmap 7.93 (`nmap -sV -Pn`); `product` and `version` are what
nmap reports for it, so benchmarks can compare fingerprints, not only service names.
"""

import asyncio
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import formatdate

# A lab connection that stays silent this long is closed, so masscan/nmap leftovers do not
# pile up in the server.
IDLE_TIMEOUT = 20.0
MAX_LINE = 4096

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass(frozen=True)
class Service:
    """A service the lab can run: nmap's name for it and the fingerprint nmap reports."""

    name: str
    product: str
    version: str
    well_known: tuple[int, ...]
    handler: Handler
    # Where nmap learns the version: its probe that reveals it is sent only to these ports
    # (at the default intensity). None means on every port.
    version_ports: tuple[int, ...] | None = None

    def fingerprint(self, port: int) -> dict[str, str]:
        """service, product and version as nmap -sV (default intensity) reports them."""
        known = self.version_ports is None or port in self.version_ports
        return {
            "service": self.name,
            "product": self.product,
            "version": self.version if known else "",
        }


async def _readline(reader: asyncio.StreamReader) -> bytes:
    """One line (b"" on EOF or idle timeout); over-long lines are cut, never buffered forever."""
    try:
        line = await asyncio.wait_for(reader.readline(), IDLE_TIMEOUT)
    except (TimeoutError, ValueError, ConnectionError, asyncio.LimitOverrunError):
        return b""
    return line[:MAX_LINE]


async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()


# --- ssh: banner first, like OpenSSH; nmap's NULL probe matches on it. -----------------------
SSH_BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"


async def handle_ssh(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _send(writer, SSH_BANNER)
    # The client's identification line; a real sshd would then start key exchange.
    if await _readline(reader):
        await _send(writer, b"Invalid SSH identification string.\r\n")


# --- ftp: vsftpd greeting and a few commands. --------------------------------------------------
FTP_REPLIES = {
    b"USER": b"331 Please specify the password.\r\n",
    b"PASS": b"530 Login incorrect.\r\n",
    b"SYST": b"215 UNIX Type: L8\r\n",
    b"FEAT": b"211-Features:\r\n EPRT\r\n EPSV\r\n MDTM\r\n PASV\r\n REST STREAM\r\n"
    b" SIZE\r\n TVFS\r\n211 End\r\n",
    b"NOOP": b"200 NOOP ok.\r\n",
    b"HELP": b"214-The following commands are recognized.\r\n ABOR ACCT ALLO APPE CDUP CWD"
    b" DELE EPRT\r\n214 Help OK.\r\n",
}


async def handle_ftp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _send(writer, b"220 (vsFTPd 3.0.3)\r\n")
    while line := await _readline(reader):
        verb = line.strip().split(b" ", 1)[0].upper()
        if verb == b"QUIT":
            await _send(writer, b"221 Goodbye.\r\n")
            return
        if not verb:
            continue
        await _send(writer, FTP_REPLIES.get(verb, b"530 Please login with USER and PASS.\r\n"))


# --- smtp: Postfix greeting and EHLO reply. ---------------------------------------------------
SMTP_HOST = b"mail.lab.example"
SMTP_EHLO = (
    b"250-" + SMTP_HOST + b"\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n"
    b"250-ETRN\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n"
    b"250 CHUNKING\r\n"
)


async def handle_smtp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _send(writer, b"220 " + SMTP_HOST + b" ESMTP Postfix (Debian/GNU)\r\n")
    while line := await _readline(reader):
        words = line.strip().split()
        verb = words[0].upper() if words else b""
        if verb == b"QUIT":
            await _send(writer, b"221 2.0.0 Bye\r\n")
            return
        if verb in (b"EHLO", b"HELO") and len(words) < 2:
            await _send(writer, b"501 Syntax: " + verb + b" hostname\r\n")
        elif verb == b"EHLO":
            await _send(writer, SMTP_EHLO)
        elif verb == b"HELO":
            await _send(writer, b"250 " + SMTP_HOST + b"\r\n")
        elif verb in (b"RSET", b"NOOP"):
            await _send(writer, b"250 2.0.0 Ok\r\n")
        elif verb == b"MAIL":
            await _send(writer, b"503 5.5.1 Error: send HELO/EHLO first\r\n")
        else:
            await _send(writer, b"502 5.5.2 Error: command not recognized\r\n")


# --- http: nginx answers. ----------------------------------------------------------------------
HTTP_SERVER = b"nginx/1.22.1"
HTTP_INDEX = (
    b"<!DOCTYPE html>\n<html>\n<head>\n<title>Welcome to nginx!</title>\n</head>\n<body>\n"
    b"<h1>Welcome to nginx!</h1>\n</body>\n</html>\n"
)


def _http_error(code: int, reason: str) -> bytes:
    title = f"{code} {reason}".encode()
    return (
        b"<html>\r\n<head><title>"
        + title
        + b"</title></head>\r\n<body>\r\n<center><h1>"
        + title
        + b"</h1></center>\r\n<hr><center>"
        + HTTP_SERVER
        + b"</center>\r\n"
        b"</body>\r\n</html>\r\n"
    )


def http_response(request_line: bytes) -> bytes:
    """nginx's answer to a request line (pure, so tests and the server agree)."""
    parts = request_line.split()
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        status, reason, body = 400, "Bad Request", _http_error(400, "Bad Request")
    elif parts[0] in (b"GET", b"HEAD"):
        status, reason, body = 200, "OK", HTTP_INDEX
    else:
        status, reason, body = 405, "Not Allowed", _http_error(405, "Not Allowed")
    head = (
        f"HTTP/1.1 {status} {reason}\r\n".encode()
        + b"Server: "
        + HTTP_SERVER
        + b"\r\n"
        + f"Date: {formatdate(usegmt=True)}\r\n".encode()
        + b"Content-Type: text/html\r\n"
        + f"Content-Length: {len(body)}\r\n".encode()
        + b"Connection: close\r\n\r\n"
    )
    return head if parts[:1] == [b"HEAD"] else head + body


async def handle_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    request_line = await _readline(reader)
    if not request_line:
        return
    # Headers up to the blank line; nginx answers only once the request is complete.
    if request_line.split()[-1:] and request_line.split()[-1].startswith(b"HTTP/"):
        while await _readline(reader) not in (b"", b"\r\n", b"\n"):
            pass
    await _send(writer, http_response(request_line.strip()))


# --- redis: RESP and inline commands. ----------------------------------------------------------
REDIS_VERSION = "7.0.15"
REDIS_INFO = (
    "# Server\r\n"
    f"redis_version:{REDIS_VERSION}\r\n"
    "redis_git_sha1:00000000\r\nredis_git_dirty:0\r\nredis_mode:standalone\r\n"
    "os:Linux 6.1.0-18-amd64 x86_64\r\narch_bits:64\r\ntcp_port:6379\r\n"
    "# Clients\r\nconnected_clients:1\r\n"
    "# Keyspace\r\n"
).encode()
REDIS_ARITY = {b"get": 2, b"set": 3, b"ping": -1, b"info": -1, b"echo": 2}


def redis_reply(args: list[bytes]) -> bytes:
    """Redis's answer to one command (pure)."""
    if not args:
        return b""
    cmd = args[0].lower()
    arity = REDIS_ARITY.get(cmd)
    if arity is None:
        shown = " ".join(f"'{a.decode(errors='replace')}'" for a in args[1:4])
        return (
            f"-ERR unknown command '{args[0].decode(errors='replace')}', "
            f"with args beginning with: {shown}\r\n".encode()
        )
    if (arity > 0 and len(args) != arity) or (arity < 0 and len(args) < -arity):
        return f"-ERR wrong number of arguments for '{cmd.decode()}' command\r\n".encode()
    if cmd == b"ping":
        return b"+PONG\r\n" if len(args) == 1 else b"$%d\r\n%s\r\n" % (len(args[1]), args[1])
    if cmd == b"info":
        return b"$%d\r\n%s\r\n" % (len(REDIS_INFO), REDIS_INFO)
    if cmd == b"echo":
        return b"$%d\r\n%s\r\n" % (len(args[1]), args[1])
    if cmd == b"get":
        return b"$-1\r\n"
    return b"+OK\r\n"


async def _redis_command(reader: asyncio.StreamReader) -> list[bytes] | None:
    """Read one RESP array or inline command; None on EOF or protocol error."""
    line = await _readline(reader)
    if not line:
        return None
    if not line.startswith(b"*"):
        return line.split()
    try:
        count = int(line[1:].strip())
        args = []
        for _ in range(min(count, 64)):
            size = int((await _readline(reader))[1:].strip())
            data = await asyncio.wait_for(reader.readexactly(size + 2), IDLE_TIMEOUT)
            args.append(data[:-2])
        return args
    except (ValueError, TimeoutError, asyncio.IncompleteReadError):
        return None


async def handle_redis(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while (args := await _redis_command(reader)) is not None:
        if args and args[0].lower() == b"quit":
            await _send(writer, b"+OK\r\n")
            return
        # Like redis >= 3.2.7: a "Host:" or "POST" line is a cross-protocol attack; hang up.
        if args and args[0].lower() in (b"host:", b"post"):
            return
        await _send(writer, redis_reply(args))


# --- mysql: a MariaDB handshake packet, then "access denied" on anything. ----------------------
MYSQL_VERSION = b"5.5.5-10.11.6-MariaDB-0+deb12u1"


def mysql_handshake(connection_id: int) -> bytes:
    """Protocol v10 handshake as MariaDB 10.11 sends it (pure)."""
    payload = (
        b"\x0a"
        + MYSQL_VERSION
        + b"\x00"
        + struct.pack("<I", connection_id)
        + b"Lab4Salt"
        + b"\x00"  # auth-plugin-data part 1
        + struct.pack("<H", 0xF7FE)  # capability flags (lower)
        + b"\x2d"  # utf8mb4_general_ci
        + struct.pack("<H", 0x0002)  # status: autocommit
        + struct.pack("<H", 0x81FF)  # capability flags (upper)
        + b"\x15"  # auth plugin data length
        + b"\x00" * 6
        + struct.pack("<I", 0x1D)  # filler + MariaDB extended capabilities
        + b"Lab4SaltPart"  # auth-plugin-data part 2
        + b"\x00"
        + b"mysql_native_password\x00"
    )
    return struct.pack("<I", len(payload))[:3] + b"\x00" + payload


async def handle_mysql(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _send(writer, mysql_handshake(id(writer) & 0xFFFF))
    try:
        await asyncio.wait_for(reader.read(4096), IDLE_TIMEOUT)
    except (TimeoutError, ConnectionError):
        return
    message = b"#28000Access denied for user ''@'198.19.0.1' (using password: NO)"
    payload = b"\xff" + struct.pack("<H", 1045) + message
    await _send(writer, struct.pack("<I", len(payload))[:3] + b"\x02" + payload)


SERVICES: dict[str, Service] = {
    s.name: s
    for s in (
        Service("ssh", "OpenSSH", "9.2p1 Debian 2+deb12u3", (22, 2222), handle_ssh),
        Service("http", "nginx", "1.22.1", (80, 8080, 8000, 8888), handle_http),
        Service("ftp", "vsftpd", "3.0.3", (21,), handle_ftp),
        Service("smtp", "Postfix smtpd", "", (25, 587), handle_smtp),
        Service("redis", "Redis key-value store", REDIS_VERSION, (6379,), handle_redis, (6379,)),
        Service("mysql", "MySQL", MYSQL_VERSION.decode(), (3306,), handle_mysql),
    )
}
