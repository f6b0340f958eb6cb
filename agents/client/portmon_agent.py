#!/usr/bin/env python3
"""Portmon host agent: reports which process owns each listening socket of this server.

One file, standard library + psutil, no Django: copy it to the server and run it.

    portmon_agent.py --dry-run                      # print the report, send nothing
    portmon_agent.py --once --server URL --token-file F --spool DIR
    portmon_agent.py --interval 300 --server URL --token-file F --spool DIR

Every report is written to the spool directory first and then delivered oldest first;
a report leaves the spool only when the server accepted it (or refused it for good), so a
server that is down loses nothing, and the server's report id check makes a delivery
retried after a lost answer a no-op: each report is recorded exactly once.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import os
import socket
import ssl
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import psutil

VERSION = "1.0"
# datetime.UTC is Python 3.11+; servers may run an older python3.
UTC = dt.timezone.utc  # noqa: UP017
CMDLINE_MAX = 1024
NAME_MAX, EXE_MAX, USER_MAX = 128, 512, 64
# The spool is bounded: past this many reports the oldest are dropped (the server refuses
# reports older than its replay window anyway; the newest say what is listening now).
SPOOL_MAX = 1000
TIMEOUT = 30
# Answers after which a report is dropped: the server will never accept it as it is. Only
# when Portmon itself says so (its JSON {"error": ...}): the same status from a proxy, a
# load balancer or a misrouted URL says nothing about the report, which stays spooled.
PERMANENT = {400, 403, 409, 413}


def refused_for_good(status: int, answer: str) -> bool:
    """Portmon's own verdict on this report's content (schema, address, replay, size)."""
    if status not in PERMANENT:
        return False
    try:
        body = json.loads(answer)
    except ValueError:
        return False
    return isinstance(body, dict) and isinstance(body.get("error"), str)


def log(message: str) -> None:
    print(f"portmon-agent: {message}", file=sys.stderr, flush=True)


def _clean(text: str, limit: int) -> str:
    """Control characters escaped (the server refuses them), then capped."""
    out = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return out[:limit]


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, UTC).isoformat()


def _address(ip: str) -> str | None:
    """Normalised address, or None for link-local IPv6 (reachable on its link only;
    Portmon neither scans nor enrols those) and anything unparsable."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    if address.is_link_local and address.version == 6:
        return None
    return str(address)


def _process(pid: int | None, cache: dict) -> dict:
    if not pid:
        return {}
    if pid in cache:
        return cache[pid]
    info: dict = {"pid": pid}
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            for key, read in (
                ("name", lambda: _clean(proc.name(), NAME_MAX)),
                ("exe", lambda: _clean(proc.exe(), EXE_MAX)),
                ("cmdline", lambda: _clean(" ".join(proc.cmdline()), CMDLINE_MAX)),
                ("user", lambda: _clean(proc.username(), USER_MAX)),
                ("started_at", lambda: _iso(proc.create_time())),
            ):
                try:
                    info[key] = read()
                except (psutil.AccessDenied, psutil.ZombieProcess, KeyError, OSError):
                    pass  # what this user may not read stays out of the report
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass
    cache[pid] = info
    return info


def collect() -> list[dict]:
    """Listening TCP and bound UDP sockets (IPv4 and IPv6) with their processes."""
    sockets: list[dict] = []
    seen: set = set()
    cache: dict = {}
    for conn in psutil.net_connections(kind="inet"):
        if not conn.laddr:
            continue
        if conn.type == socket.SOCK_STREAM:
            if conn.status != psutil.CONN_LISTEN:
                continue
            proto = "tcp"
        elif conn.type == socket.SOCK_DGRAM:
            if conn.raddr:  # a connected UDP socket is a client, not a service
                continue
            proto = "udp"
        else:
            continue
        address = _address(conn.laddr.ip)
        if address is None or not 1 <= conn.laddr.port <= 65535:
            continue
        key = (proto, address, conn.laddr.port, conn.pid)
        if key in seen:
            continue
        seen.add(key)
        sockets.append(
            {"proto": proto, "address": address, "port": conn.laddr.port}
            | _process(conn.pid, cache)
        )
    sockets.sort(key=lambda s: (s["proto"], s["port"], s["address"], s.get("pid") or 0))
    return sockets


def next_seq(state_dir: Path) -> int:
    """Above the last one sent and at least the time in ms: a lost state file (a
    reinstall) still gives sequences above what the server accepted."""
    path = state_dir / "seq"
    try:
        last = int(path.read_text())
    except (OSError, ValueError):
        last = 0
    seq = max(last + 1, int(time.time() * 1000))
    _write_atomic(path, str(seq).encode())
    return seq


def build_report(state_dir: Path | None) -> dict:
    """state_dir None (--dry-run): nothing is written, the sequence is the time in ms."""
    return {
        "report_id": str(uuid.uuid4()),
        "seq": next_seq(state_dir) if state_dir else int(time.time() * 1000),
        "collected_at": dt.datetime.now(UTC).isoformat(),
        "hostname": socket.gethostname()[:255],
        "agent_version": VERSION,
        "sockets": collect(),
    }


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class Spool:
    """Reports waiting for delivery, one file each, named so that sorting is oldest first."""

    def __init__(self, folder: Path, limit: int = SPOOL_MAX) -> None:
        self.folder = folder
        self.limit = limit
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    def put(self, report: dict) -> Path:
        path = self.folder / f"{report['seq']:020d}-{report['report_id']}.json"
        _write_atomic(path, json.dumps(report, separators=(",", ":")).encode())
        for old in self.pending()[: -self.limit]:
            log(f"spool full: dropped {old.name}")
            old.unlink(missing_ok=True)
        return path

    def pending(self) -> list[Path]:
        return sorted(self.folder.glob("*.json"))


class Sender:
    def __init__(self, server: str, token: str, ca_file: str | None = None) -> None:
        self.url = server.rstrip("/") + "/api/agents/report"
        self.token = token
        # https: the server's certificate and name are verified (the system's CAs, or
        # --ca-file for a private CA). There is no option to turn that off.
        self.context = ssl.create_default_context(cafile=ca_file)

    def send(self, body: bytes) -> tuple[int, str]:
        """(HTTP status, answer); status 0 when the server could not be reached."""
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/json",
                "User-Agent": f"portmon-agent/{VERSION}",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT, context=self.context) as r:
                return r.status, r.read(4096).decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(4096).decode("utf-8", "replace")
        except (urllib.error.URLError, OSError) as exc:
            return 0, str(getattr(exc, "reason", exc))


def deliver(spool: Spool, sender: Sender) -> tuple[int, int]:
    """Send spooled reports oldest first; stop at the first that may succeed later.
    Returns (delivered, left in the spool)."""
    delivered = 0
    pending = spool.pending()
    for i, path in enumerate(pending):
        try:
            body = path.read_bytes()
        except FileNotFoundError:
            continue
        status, answer = sender.send(body)
        if 200 <= status < 300:
            path.unlink(missing_ok=True)
            delivered += 1
            continue
        if refused_for_good(status, answer):
            log(f"{path.name} refused for good ({status}): {answer[:300]}")
            path.unlink(missing_ok=True)
            continue
        why = "unreachable" if status == 0 else f"HTTP {status}"
        log(f"server {why}: {answer[:300]}; {len(pending) - i} report(s) stay spooled")
        return delivered, len(pending) - i
    return delivered, 0


def read_token(path: str) -> str:
    file = Path(path)
    if file.stat().st_mode & 0o077:
        log(f"warning: {path} is readable by others (chmod 600)")
    token = file.read_text().strip()
    if not token:
        raise SystemExit(f"portmon-agent: {path} is empty")
    return token


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", help="Portmon's base URL, e.g. https://portmon.example")
    parser.add_argument("--token-file", help="file holding this agent's token")
    parser.add_argument("--spool", default="/var/lib/portmon-agent", help="state and spool")
    parser.add_argument("--ca-file", help="CA bundle for a private CA (https)")
    parser.add_argument("--once", action="store_true", help="one report, then exit")
    parser.add_argument("--interval", type=float, default=300.0, help="seconds between reports")
    parser.add_argument("--dry-run", action="store_true", help="print the report, send nothing")
    args = parser.parse_args(argv)

    if args.dry_run:
        json.dump(build_report(None), sys.stdout, indent=2)
        print()
        return 0
    if not args.server or not args.token_file:
        parser.error("--server and --token-file are needed (or --dry-run)")
    if args.interval < 1:
        parser.error("--interval must be at least 1 second")
    sender = Sender(args.server, read_token(args.token_file), args.ca_file)
    state = Path(args.spool)
    spool = Spool(state / "spool")
    while True:
        spool.put(build_report(state))
        delivered, left = deliver(spool, sender)
        if args.once:
            print(json.dumps({"delivered": delivered, "spooled": left}))
            return 0 if left == 0 else 1
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
