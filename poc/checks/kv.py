"""Key-value stores answering without authentication: Redis INFO, Memcached stats."""

import re

from poc.checks.base import Check, CheckError, Target, Verdict
from poc.checks.registry import check

REDIS_FIELDS = ("redis_version", "redis_mode", "os", "tcp_port", "executable", "config_file")
MEMCACHED_FIELDS = ("version", "uptime", "curr_connections", "curr_items", "bytes")


@check(
    name="redis_noauth",
    title="Redis answers INFO without authentication",
    severity="high",
    services=("redis",),
    ports=(6379,),
)
def redis_noauth(spec: Check, target: Target) -> Verdict:
    with target.connect() as conn:
        conn.send(b"INFO server\r\n")
        first = conn.read_until(b"\r\n")
        if first.startswith(b"-"):
            # -NOAUTH (requirepass), -DENIED (protected mode): closed to us.
            return spec.verdict(False, first.strip())
        if not re.fullmatch(rb"\$\d{1,7}\r\n", first):
            raise CheckError("not a Redis answer")
        body = conn.read_exactly(int(first[1:-2])).decode("utf-8", "replace")
    fields = dict(
        line.split(":", 1) for line in body.splitlines() if ":" in line and not line[:1] == "#"
    )
    if "redis_version" not in fields:
        raise CheckError("INFO answer without redis_version")
    shown = "\n".join(f"{k}:{fields[k]}" for k in REDIS_FIELDS if k in fields)
    return spec.verdict(True, f"INFO server without a password:\n{shown}")


@check(
    name="memcached_stats",
    title="Memcached answers stats without authentication",
    severity="high",
    services=("memcache", "memcached"),
    ports=(11211,),
)
def memcached_stats(spec: Check, target: Target) -> Verdict:
    with target.connect() as conn:
        conn.send(b"stats\r\n")
        first = conn.read_until(b"\r\n")
        if not first.startswith(b"STAT "):
            # CLIENT_ERROR unauthenticated (-Y auth file), ERROR (SASL only): closed to us.
            if first.startswith((b"CLIENT_ERROR", b"ERROR", b"SERVER_ERROR")):
                return spec.verdict(False, first.strip())
            raise CheckError("not a Memcached answer")
        rest = conn.read_until(b"END\r\n")
    stats = {}
    for line in (first + rest).decode("utf-8", "replace").splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[0] == "STAT":
            stats[parts[1]] = parts[2]
    shown = "\n".join(f"STAT {k} {stats[k]}" for k in MEMCACHED_FIELDS if k in stats)
    return spec.verdict(True, f"stats without authentication:\n{shown}")
