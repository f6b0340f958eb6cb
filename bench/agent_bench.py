"""How many agent reports per second does one app process ingest on MariaDB?

Usage (the database is created, filled, timed and dropped):
    DATABASE_URL=mysql://root@127.0.0.1:3306/portmon \
        .venv/bin/python bench/agent_bench.py [--agents 100] [--reports 3000] [--keep]

The benchmark uses its own database, portmon_bench_agents (never the one in DATABASE_URL),
and one gunicorn process on a free loopback port, with Redis as broker and shared cache as
in production (--redis): the whole path of POST /api/agents/report (token check,
rate-limit counter on the shared cache, parsing, replay checks, inventory, events). The
worker is gthread with --threads threads (the transactions of concurrent reports then
share MariaDB's log flushes), --threads 1 for a sync worker. Each report lists 50 sockets
(addresses 127.x: the agents are enrolled on loopback addresses; nothing is scanned or
connected to but the app). Loaders in this process keep requests in flight.
The server's CPU time per report (gunicorn's worker, from /proc) is printed too: on a
busy machine it says what one core could do.
- steady state: every agent reports the same 50 sockets it reported before (after one
  report per agent to fill the inventory): the daily case.
- all new: every report lists 50 (port, process) pairs the agent never reported (50
  new_process events per report through the public event path): the first reports.
"""

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

BENCH_DB = "portmon_bench_agents"
ROOT = Path(__file__).resolve().parent.parent
SOCKETS = 50


def bench_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("mysql", "mariadb"):
        sys.exit("agent_bench: DATABASE_URL must be mysql://user:pass@host:port/db (MariaDB)")
    return urlunsplit(parts._replace(path=f"/{BENCH_DB}"))


def admin(url: str, sql: str) -> None:
    import MySQLdb

    parts = urlsplit(url)
    conn = MySQLdb.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
    )
    conn.cursor().execute(sql)
    conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def manage(env: dict, *args: str) -> str:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip


def report(seq: int, ip: str, ports: range) -> bytes:
    return json.dumps(
        {
            "report_id": str(uuid.uuid4()),
            "seq": seq,
            "collected_at": datetime.now(UTC).isoformat(),
            "hostname": "bench",
            "agent_version": "bench",
            "sockets": [
                {
                    "proto": "tcp",
                    "address": ip,
                    "port": port,
                    "pid": 1000 + port,
                    "name": f"svc{port}",
                    "exe": f"/usr/sbin/svc{port}",
                    "cmdline": f"/usr/sbin/svc{port} --port {port} --config /etc/svc.conf",
                    "user": "daemon",
                    "started_at": "2026-11-20T08:00:00+00:00",
                }
                for port in ports
            ],
        }
    ).encode()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (gunicorn's worker), in seconds."""
    total = 0.0
    for child in [pid, *_children(pid)]:
        fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def post_all(port: int, bodies: list[tuple[str, bytes]], loaders: int) -> tuple[float, list]:
    """Send (token, body) pairs from `loaders` threads; (seconds, statuses)."""
    statuses, lock, queue = [], threading.Lock(), list(reversed(bodies))

    def loader() -> None:
        while True:
            with lock:
                if not queue:
                    return
                token, body = queue.pop()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request(
                "POST",
                "/api/agents/report",
                body,
                {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
            status = conn.getresponse().status
            conn.close()
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=loader) for _ in range(loaders)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, statuses


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--reports", type=int, default=3000, help="per phase")
    parser.add_argument("--loaders", type=int, default=8, help="requests in flight")
    parser.add_argument(
        "--threads", type=int, default=8, help="gunicorn gthread threads (1: a sync worker)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per phase")
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument(
        "--redis",
        default="redis://127.0.0.1:6379/0",
        help="broker and shared cache (the rate-limit counter) as in production; 'none' for "
        "the embedded defaults (filesystem broker, database cache)",
    )
    args = parser.parse_args()

    source = os.environ.get("DATABASE_URL", "")
    url = bench_url(source)
    admin(source, f"DROP DATABASE IF EXISTS {BENCH_DB}")
    admin(source, f"CREATE DATABASE {BENCH_DB} CHARACTER SET utf8mb4")
    env = {
        **os.environ,
        "DATABASE_URL": url,
        # Counted on the shared cache like in production, never reached.
        "PORTMON_AGENT_RATE": "1000000",
        "PORTMON_CACHE_URL": "",
        "LOG_LEVEL": "WARNING",
    }
    env.pop("CELERY_BROKER_URL", None)
    if args.redis != "none":
        env["CELERY_BROKER_URL"] = args.redis
    gunicorn = None
    try:
        manage(env, "migrate", "-v0")
        ips = [f"127.{i // 250 + 1}.{i % 250 + 1}.1" for i in range(args.agents)]
        tokens = manage(
            env, "shell", "--no-imports", "-c",
            "from agents.services.enrollment import agent_add\n"
            f"for i, ip in enumerate({ips!r}):\n"
            "    print(agent_add(name=f'bench{i}', ips=[ip]).token)",
        ).split()  # fmt: skip
        agents = list(zip(tokens, ips, strict=True))
        port = free_port()
        gunicorn = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
             *(["--threads", str(args.threads)] if args.threads > 1 else []),
             "--backlog", "256", "portmon.wsgi"],  # fmt: skip
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        seq = 0
        baseline = range(1, SOCKETS + 1)

        def batch(n: int, ports_of) -> list[tuple[str, bytes]]:
            nonlocal seq
            seq += 1
            out = []
            for k in range(n):
                token, ip = agents[k % len(agents)]
                out.append((token, report(seq + k // len(agents), ip, ports_of(k))))
            seq += n // len(agents) + 1
            return out

        seconds, statuses = post_all(port, batch(len(agents), lambda k: baseline), args.loaders)
        assert set(statuses) == {200}, statuses[:10]
        results = {}
        for phase in ("steady", "all_new"):
            rates = []
            for r in range(args.rounds):
                if phase == "steady":
                    bodies = batch(args.reports, lambda k: baseline)
                else:
                    # Ports never reported before by that agent: every socket is new.
                    first = 100 + (r * args.reports // len(agents) + 1) * SOCKETS

                    def fresh(k, first=first):
                        lo = first + (k // len(agents)) * SOCKETS
                        return range(lo, lo + SOCKETS)

                    bodies = batch(args.reports, fresh)
                cpu = cpu_seconds(gunicorn.pid)
                seconds, statuses = post_all(port, bodies, args.loaders)
                cpu = (cpu_seconds(gunicorn.pid) - cpu) / len(bodies) * 1000
                assert set(statuses) == {200}, sorted(set(statuses))
                rates.append(len(bodies) / seconds)
                print(f"{phase} round {r + 1}: {len(bodies)} reports in {seconds:.2f} s = "
                      f"{rates[-1]:.0f} reports/s; server CPU {cpu:.2f} ms/report",
                      flush=True)  # fmt: skip
            results[phase] = rates
        counts = manage(
            env, "shell", "--no-imports", "-c",
            "from agents.models import *; from alerts.models import AlertEvent; "
            "print(AgentReport.objects.count(), ProcessSocket.objects.count(), "
            "AlertEvent.objects.count())",
        ).split()  # fmt: skip
        print(f"rows: {counts[0]} reports, {counts[1]} inventory rows, {counts[2]} events")
        worker = f"gthread, {args.threads} threads" if args.threads > 1 else "sync"
        cache = "the database cache" if args.redis == "none" else args.redis
        for phase, rates in results.items():
            print(
                f"{phase}: median {statistics.median(rates):.0f} reports/s "
                f"(rounds: {', '.join(f'{r:.0f}' for r in rates)}), {SOCKETS} sockets each, "
                f"1 gunicorn process ({worker}), {args.loaders} requests in flight, "
                f"{args.agents} agents, rate counter on {cache}"
            )
    finally:
        if gunicorn is not None:
            gunicorn.terminate()
            gunicorn.wait(timeout=30)
        if not args.keep:
            admin(source, f"DROP DATABASE IF EXISTS {BENCH_DB}")


if __name__ == "__main__":
    main()
