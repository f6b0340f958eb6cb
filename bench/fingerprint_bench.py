"""Fingerprint tail on loopback: Portmon's fingerprinting vs one plain `nmap -sV` run.

    .venv/bin/python bench/fingerprint_bench.py [--hosts 8] [--broker redis://127.0.0.1:6379/7]

Fast services (ssh, smtp and ftp banners, an HTTP server) on 127.0.0.31... and, next to
them, the services that make nmap's tail: HTTP servers that answer after 8 s (later than
any nmap probe waits), ports that drip their banner a byte every 2 s, and ports that accept
and never speak. Portmon runs through its real path (`manage.py scan --engine connect` on a
fresh SQLite database, a sweep worker and a 4-process fingerprint worker, its default port
timeout); then one `nmap -sT -sV -Pn -n` over the same open ports. Prints both wall times,
their ratio (target <= 0.5), how many ports each named, and Portmon's progress lines with
the second they appeared. Loopback only: nothing leaves the machine.
"""

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PY = sys.executable
FP_CONCURRENCY = 4  # as bin/run starts the fingerprint worker
HTTP_REPLY = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nContent-Type: text/html\r\n"
    b"Content-Length: 13\r\nConnection: close\r\n\r\n<h1>lab</h1>\n"
)
BANNERS = {
    "ssh": b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n",
    "smtp": b"220 mail.lab ESMTP Postfix (Debian/GNU)\r\n",
    "ftp": b"220 (vsFTPd 3.0.3)\r\n",
}


async def banner(reader, writer, text: bytes, every: float = 0.0) -> None:
    with contextlib.suppress(Exception):
        for i in range(len(text)) if every else [None]:
            writer.write(text[i : i + 1] if every else text)
            await writer.drain()
            await asyncio.sleep(every)
        await asyncio.wait_for(reader.read(256), 10)
    writer.close()


async def http(reader, writer, delay: float = 0.0) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        await asyncio.sleep(delay)
        writer.write(HTTP_REPLY)
        await writer.drain()
    writer.close()


async def silent(reader, writer) -> None:
    with contextlib.suppress(Exception):
        await asyncio.sleep(3600)
    writer.close()


KINDS = {
    "ssh": lambda r, w: banner(r, w, BANNERS["ssh"]),
    "smtp": lambda r, w: banner(r, w, BANNERS["smtp"]),
    "ftp": lambda r, w: banner(r, w, BANNERS["ftp"]),
    "http": http,
    "slow": lambda r, w: http(r, w, delay=8.0),
    "drip": lambda r, w: banner(r, w, BANNERS["ssh"], every=2.0),
    "silent": silent,
}
FAST = ("ssh", "smtp", "ftp", "http")
TAIL = ("slow", "drip", "silent")


class Services:
    """The lab's services in a background event loop; {(ip, port): kind}.

    Every host has the same port numbers (a free block from BASE_PORT): the fast services
    on the first four, a tail service on the fifth on every other host. One short port
    range then covers them all, for Portmon's --ports and nmap's -p alike.
    """

    def __init__(self, hosts: int):
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.kinds: dict[tuple[str, int], str] = {}
        self.base = free_port_block(len(FAST) + 1)
        for n in range(hosts):
            ip = f"127.0.0.{31 + n}"
            tail = (TAIL[(n // 2) % len(TAIL)],) if n % 2 == 0 else ()
            for offset, kind in enumerate(FAST + tail):
                asyncio.run_coroutine_threadsafe(
                    asyncio.start_server(KINDS[kind], ip, self.base + offset), self.loop
                ).result(5)
                self.kinds[(ip, self.base + offset)] = kind

    @property
    def ips(self) -> list[str]:
        return sorted({ip for ip, _ in self.kinds}, key=lambda ip: int(ip.rsplit(".", 1)[1]))

    @property
    def ports(self) -> str:
        return f"{self.base}-{self.base + len(FAST)}"


def free_port_block(size: int, start: int = 42000) -> int:
    """First port of a block where nothing listens on any address (from /proc)."""
    busy = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(name) as fh:
            for line in list(fh)[1:]:
                fields = line.split()
                if fields[3] == "0A":  # TCP_LISTEN
                    busy.add(int(fields[1].rsplit(":", 1)[1], 16))
    for base in range(start, 60000, size):
        if not busy.intersection(range(base, base + size)):
            return base
    raise SystemExit("no free port block")


def bench_portmon(svc: Services, tmp: Path, broker: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "CELERY_"))}
    env.update(PORTMON_DATA_DIR=str(tmp), CELERY_BROKER_URL=broker, LOG_LEVEL="WARNING")
    manage = [PY, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    subprocess.run([*manage, "scope", "add", "127.0.0.0/8", "--zone", "internal"], cwd=ROOT,
                   env=env, check=True, capture_output=True)  # fmt: skip
    subprocess.run([PY, "-m", "celery", "-A", "portmon", "purge", "-f"], cwd=ROOT, env=env,
                   check=True, capture_output=True)  # fmt: skip
    worker = [PY, "-m", "celery", "-A", "portmon", "worker", "--loglevel", "WARNING"]
    procs = [
        subprocess.Popen([*worker, "-Q", "sweep.internal", "-c", "1", "-n", "sweep@fpbench"],
                         cwd=ROOT, env=env, start_new_session=True,
                         stdout=(tmp / "sweep.log").open("w"), stderr=subprocess.STDOUT),
        subprocess.Popen([*worker, "-Q", "fingerprint,default", "-c", str(FP_CONCURRENCY),
                          "-n", "fp@fpbench"],
                         cwd=ROOT, env=env, start_new_session=True,
                         stdout=(tmp / "fp.log").open("w"), stderr=subprocess.STDOUT),
    ]  # fmt: skip
    time.sleep(8)  # let the workers connect before the clock starts
    argv = [*manage, "scan", ",".join(svc.ips), "--ports", svc.ports,
            "--engine", "connect", "--json"]  # fmt: skip
    progress: list[tuple[float, str]] = []
    try:
        start = time.monotonic()
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        reader = threading.Thread(target=lambda: progress.extend(
            (time.monotonic() - start, line.rstrip()) for line in proc.stderr  # type: ignore[union-attr]
        ))  # fmt: skip
        reader.start()
        out = proc.stdout.read()  # type: ignore[union-attr]
        proc.wait()
        reader.join()
        wall = time.monotonic() - start
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    if proc.returncode != 0:
        raise SystemExit(f"portmon scan failed ({proc.returncode}): {progress[-5:]}")
    import json

    rows = json.loads(out)
    named = {(r["ip"], r["port"]) for r in rows if r["service"]}
    return {"wall": wall, "found": len(rows), "named": named, "progress": progress}


def bench_nmap(svc: Services, tmp: Path) -> dict:
    from scanner.engines import nmap

    out = tmp / "nmap.xml"
    argv = ["nmap", "-sT", "-sV", "-Pn", "-n", "-p", svc.ports,
            "-oX", str(out), *svc.ips]  # fmt: skip
    start = time.monotonic()
    subprocess.run(argv, check=True, capture_output=True)
    wall = time.monotonic() - start
    findings = [f for h in nmap.parse_xml(out.read_text()) for f in h.findings]
    wanted = set(svc.kinds)
    named = {(f.ip, f.port) for f in findings if (f.ip, f.port) in wanted and f.product}
    return {"wall": wall, "named": named}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/7",
                        help="Celery broker for Portmon's workers")  # fmt: skip
    args = parser.parse_args()
    if not 1 <= args.hosts <= 200:
        raise SystemExit("--hosts must be 1-200 (127.0.0.31 onwards)")
    svc = Services(args.hosts)
    fast = {key for key, kind in svc.kinds.items() if kind in FAST}
    tail = {kind: sum(1 for k in svc.kinds.values() if k == kind) for kind in TAIL}
    print(f"loopback lab: {len(svc.ips)} hosts, {len(svc.kinds)} open ports: {len(fast)} fast, "
          + ", ".join(f"{n} {kind}" for kind, n in tail.items()))  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="portmon-fpbench-") as tmpdir:
        tmp = Path(tmpdir)
        pm = bench_portmon(svc, tmp, args.broker)
        for at, line in pm["progress"]:
            if "fingerprinted" in line or "finished" in line:
                print(f"  {at:6.1f}s  {line}")
        print(f"portmon scan (sweep + fingerprints): {pm['wall']:6.1f} s, "
              f"{pm['found']} open, named {len(pm['named'] & fast)}/{len(fast)} fast, "
              f"{len(pm['named'] - fast)} of the tail")  # fmt: skip
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portmon.settings")
        os.environ["PORTMON_DATA_DIR"] = str(tmp / "django")
        import django

        django.setup()
        nm = bench_nmap(svc, tmp)
        print(f"nmap -sT -sV, one run          : {nm['wall']:6.1f} s, "
              f"named {len(nm['named'] & fast)}/{len(fast)} fast, "
              f"{len(nm['named'] - fast)} of the tail")  # fmt: skip
        print(f"portmon / nmap -sV: {pm['wall'] / nm['wall']:.2f}  (target <= 0.5)")


if __name__ == "__main__":
    main()
