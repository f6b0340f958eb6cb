"""Scan benchmark on the namespace lab: Portmon vs a plain masscan pass vs nmap -sS -sV -p-.

    sudo .venv/bin/python bench/scan_bench.py [--hosts 62] [--rate 300000] [--loss 0.005]
                                             [--skip-nmap] [--portmon-runs 1] [--portmon-only]
                                             [--on-link] [--ports 1-65535]

--on-link puts the lab's hosts on the scanner's own subnet: Portmon then scans them with its
connect scanner (masscan cannot: one destination MAC per frame), so the plain masscan pass
is left out and Portmon is compared with nmap -sS -sV on the same ports.

Prints, for each contender: wall time, open ports found / truth, fingerprints correct,
peak memory. The lab lives in 198.18.0.0/15 (blackholed in the root namespace) and is torn
down at the end. Portmon runs through its real path: `manage.py scan` on a fresh SQLite
database with real Celery worker processes (filesystem broker, no server needed).
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scanner.targets import parse_ports, port_list  # noqa: E402
from tests.lab import BENCHMARK_LAB, Lab  # noqa: E402

PY = sys.executable
# Fingerprint worker processes, as bin/run starts them (PORTMON_WORKER_CONCURRENCY). A task
# runs nmap over up to 32 hosts, so a few processes keep up with a sweep.
FP_CONCURRENCY = 4


def timed(argv: list[str], **kw) -> tuple[float, int, subprocess.CompletedProcess]:
    """Run argv; return wall seconds, the child's peak RSS in MiB, and the result."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.monotonic()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, **kw)
        # wait4 rather than wait: it also returns the child's resource usage.
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(argv, proc.returncode, out.read(), err.read())
    return wall, usage.ru_maxrss // 1024, result


def peak_rss_mib(pid: int) -> int:
    """VmHWM of a process and all its descendants, summed (MiB)."""
    total = 0
    pids = [pid]
    while pids:
        p = pids.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
            pids.extend(int(c) for c in children)
        except OSError:
            continue
    return total // 1024


def masscan_argv(lab: Lab, rate: int, out: Path, ports: str) -> list[str]:
    return [
        "masscan", ",".join(lab.hosts), f"-p{ports}", "--rate", str(rate), "--wait", "3",
        "--adapter", lab.interface, "--adapter-ip", lab.source_ip,
        "--router-mac", lab.router_mac, "-oJ", str(out),
    ]  # fmt: skip


def parse_masscan(path: Path) -> set[tuple[str, int]]:
    from scanner.engines import masscan

    return {(f.ip, f.port) for f in masscan.parse_json(path.read_text())}


def nmap_fingerprint(ip: str, ports: list[int]) -> dict[int, str]:
    from scanner.engines import nmap

    result = nmap.fingerprint(ip=ip, ports=ports, options=nmap.FingerprintOptions(timeout=300))
    return {f.port: f.service for f in result.findings}


def score(lab: Lab, found: set, services: dict) -> str:
    truth = lab.open_ports
    hit = len(found & truth)
    right = sum(1 for key in truth if services.get(key) == lab.truth[key[0]][key[1]])
    extra = len(found - truth)
    return (
        f"found {hit}/{len(truth)} ({100 * hit / len(truth):.2f}%)"
        + (f", {extra} not in truth" if extra else "")
        + f", fingerprints correct {right}/{len(truth)}"
    )


def bench_masscan(lab: Lab, rate: int, tmp: Path, ports: str) -> dict:
    out = tmp / "masscan.json"
    wall, rss, res = timed(masscan_argv(lab, rate, out, ports))
    if res.returncode != 0:
        raise SystemExit(f"masscan failed: {res.stderr.decode()[-2000:]}")
    found = parse_masscan(out)
    by_host: dict[str, list[int]] = {}
    for ip, port in found:
        by_host.setdefault(ip, []).append(port)
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = pool.map(lambda item: (item[0], nmap_fingerprint(*item)), by_host.items())
        services = {(ip, p): s for ip, fp in results for p, s in fp.items()}
    fp_wall = time.monotonic() - start
    return {"sweep": wall, "fingerprint": fp_wall, "rss": rss, "found": found, "services": services}


def bench_nmap(lab: Lab, tmp: Path, ports: str) -> dict:
    out = tmp / "nmap.xml"
    argv = ["nmap", "-sS", "-sV", f"-p{ports}", "-T4", "-Pn", "-n", "-oX", str(out), *lab.hosts]
    wall, rss, res = timed(argv)
    from scanner.engines import nmap

    hosts = nmap.parse_xml(out.read_text())
    found = {(f.ip, f.port) for h in hosts for f in h.findings}
    services = {(f.ip, f.port): f.service for h in hosts for f in h.findings}
    return {"wall": wall, "rss": rss, "found": found, "services": services}


# "[2026-11-21 10:00:10,000: INFO/ForkPoolWorker-1] Task scanner.fingerprint_hosts[id]
#  succeeded in 6.2s: 3" (3 ports fingerprinted; 0: the task found its hosts claimed).
_TASK_DONE = re.compile(
    r"^\[(?P<at>[\d-]+ [\d:,]+): \w+/[\w-]+\] Task scanner\.fingerprint_hosts\[[\w-]+\] "
    r"succeeded in (?P<took>[\d.]+)s: (?P<ports>\d+)"
)


def fingerprint_timeline(log: str, started_at: datetime) -> str:
    """One line on the nmap stage from the fingerprint worker's log: tasks, and when they ran."""
    ended: list[tuple[float, float]] = []  # (seconds after the scan started, task seconds)
    for line in log.splitlines():
        match = _TASK_DONE.match(line)
        if match and match["ports"] != "0":
            at = datetime.strptime(match["at"], "%Y-%m-%d %H:%M:%S,%f")
            ended.append(((at - started_at).total_seconds(), float(match["took"])))
    if not ended:
        return "  fingerprint: no task finished"
    last_end, _ = max(ended)
    longest = max(took for _, took in ended)
    late = sorted(round(end - took, 1) for end, took in ended if end - took > last_end - 30)
    return (
        f"  fingerprint: {len(ended)} nmap run(s), longest {longest:.1f}s, last ended at"
        f" {last_end:.1f}s; starts in the last 30 s: {late}"
    )


PHASES_SCRIPT = """
from scanner.models import ScanRun
run = ScanRun.objects.latest("created_at")
shards = list(run.shards.order_by("started_at"))
t0 = run.started_at
def at(t):
    return f"{(t - t0).total_seconds():6.1f}s"
print(f"  phases: {len(shards)} shard(s), sweep done at {at(max(s.finished_at for s in shards))},"
      f" run finished at {at(run.finished_at)}, diffed at {at(run.diffed_at)}")
import datetime
command = datetime.datetime.fromtimestamp(COMMAND_STARTED, datetime.timezone.utc)
print(f"  command: run created {(run.created_at - command).total_seconds():.1f}s and started"
      f" {(t0 - command).total_seconds():.1f}s after the command started")
"""


def bench_portmon(lab: Lab, rate: int, tmp: Path, broker: str, ports: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "CELERY_"))}
    if broker:
        env["CELERY_BROKER_URL"] = broker
    env.update(PORTMON_DATA_DIR=str(tmp / "portmon"), LOG_LEVEL="WARNING")
    if not lab.on_link:
        env.update(
            PORTMON_MASSCAN_ADAPTER=lab.interface,
            PORTMON_MASSCAN_ADAPTER_IP=lab.source_ip,
            PORTMON_MASSCAN_ROUTER_MAC=lab.router_mac,
        )
    manage = [PY, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    subprocess.run([*manage, "scope", "add", lab.cidr, "--zone", "internal"], cwd=ROOT, env=env,
                   check=True, capture_output=True)  # fmt: skip
    worker = [PY, "-m", "celery", "-A", "portmon", "worker", "--loglevel", "INFO"]
    procs = [
        subprocess.Popen([*worker, "-Q", "sweep.internal", "-c", "1", "-n", "sweep@bench"],
                         cwd=ROOT, env=env, start_new_session=True,
                         stdout=(tmp / "sweep.log").open("w"), stderr=subprocess.STDOUT),
        subprocess.Popen([*worker, "-Q", "fingerprint,default", "-c", str(FP_CONCURRENCY),
                          "-n", "fp@bench"],
                         cwd=ROOT, env=env, start_new_session=True,
                         stdout=(tmp / "fp.log").open("w"), stderr=subprocess.STDOUT),
    ]  # fmt: skip
    time.sleep(6)  # let the workers connect before the clock starts
    started_at = datetime.now()
    command_started = time.time()
    try:
        wall, _, res = timed(
            [
                *manage,
                "scan",
                ",".join(lab.hosts),
                "--ports",
                ports,
                "--rate",
                str(rate),
                "--json",
            ],
            cwd=ROOT,
            env=env,
        )
        if res.returncode != 0:
            raise SystemExit(f"portmon scan failed: {res.stderr.decode()[-3000:]}")
        rss = sum(peak_rss_mib(p.pid) for p in procs)
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:  # a warm shutdown waiting on a straggler
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    phases = subprocess.run(
        [*manage, "shell", "-c", PHASES_SCRIPT.replace("COMMAND_STARTED", repr(command_started))],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    print(phases.stdout.strip() or phases.stderr.strip()[-500:])
    for line in (tmp / "sweep.log").read_text().splitlines():
        if "shard" in line and ("took" in line or "re-probed" in line):
            print("  " + line.split("] ", 1)[-1])
    print(fingerprint_timeline((tmp / "fp.log").read_text(), started_at))
    rows = json.loads(res.stdout)
    found = {(r["ip"], r["port"]) for r in rows}
    services = {(r["ip"], r["port"]): r["service"] for r in rows}
    return {"wall": wall, "rss": rss, "found": found, "services": services}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=BENCHMARK_LAB["hosts"])
    parser.add_argument("--rate", type=int, default=300_000)
    parser.add_argument("--loss", type=float, default=BENCHMARK_LAB["loss"])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--portmon-runs", type=int, default=1)
    parser.add_argument(
        "--broker",
        default="redis://127.0.0.1:6379/11",
        help="Celery broker for Portmon's workers ('' for the embedded filesystem broker)",
    )
    parser.add_argument("--skip-nmap", action="store_true", help="skip nmap -sS -sV -p- (slow)")
    parser.add_argument(
        "--on-link", action="store_true", help="hosts on the scanner's subnet (connect path)"
    )
    parser.add_argument("--ports", default="1-65535", help="ports to scan (default all)")
    parser.add_argument(
        "--portmon-only", action="store_true", help="skip both baselines (quick tuning runs)"
    )
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portmon.settings")
    with tempfile.TemporaryDirectory(prefix="portmon-bench-") as tmpdir:
        tmp = Path(tmpdir)
        os.environ["PORTMON_DATA_DIR"] = str(tmp / "django")
        import django

        django.setup()
        ports_per_host = BENCHMARK_LAB["ports_per_host"]
        with Lab(
            hosts=args.hosts,
            ports_per_host=ports_per_host,
            loss=args.loss,
            seed=args.seed,
            on_link=args.on_link,
        ) as lab:
            if args.ports != "1-65535":  # the truth: open ports inside the scanned range
                wanted = set(port_list(parse_ports(args.ports)))
                lab.truth = {ip: {p: s for p, s in ports.items() if p in wanted}
                             for ip, ports in lab.truth.items()}  # fmt: skip
            truth = len(lab.open_ports)
            print(f"lab: {len(lab.hosts)} hosts {'on-link' if args.on_link else 'routed'}, "
                  f"{truth} open ports, {args.loss:.1%} loss, ports {args.ports}, "
                  f"rate {args.rate} pps")  # fmt: skip
            walls = []
            for i in range(args.portmon_runs):
                pm = bench_portmon(lab, args.rate, tmp / f"pm{i}", args.broker, args.ports)
                walls.append(pm["wall"])
                result = score(lab, pm["found"], pm["services"])
                print(f"portmon            : {pm['wall']:7.1f} s  {result}  "
                      f"workers peak {pm['rss']} MiB")  # fmt: skip
            if args.portmon_only:
                return
            if args.on_link:
                # No masscan pass: on-link hosts each have their own MAC, masscan uses one.
                if not args.skip_nmap:
                    nm = bench_nmap(lab, tmp, args.ports)
                    result = score(lab, nm["found"], nm["services"])
                    print(f"nmap -sS -sV -T4   : {nm['wall']:7.1f} s  {result}  "
                          f"peak {nm['rss']} MiB")  # fmt: skip
                    print(f"portmon / nmap     : {pm['wall'] / nm['wall']:.2f}")
                return
            ms = bench_masscan(lab, args.rate, tmp, args.ports)
            base = ms["sweep"] + ms["fingerprint"]
            print(f"masscan 1 pass     : {ms['sweep']:7.1f} s  "
                  f"{score(lab, ms['found'], {})}  peak {ms['rss']} MiB")  # fmt: skip
            print(f"masscan + nmap -sV : {base:7.1f} s  "
                  f"{score(lab, ms['found'], ms['services'])}")  # fmt: skip
            if not args.skip_nmap:
                nm = bench_nmap(lab, tmp, args.ports)
                result = score(lab, nm["found"], nm["services"])
                print(f"nmap -sS -sV -p- -T4: {nm['wall']:6.1f} s  {result}  "
                      f"peak {nm['rss']} MiB")  # fmt: skip
                print(f"portmon / nmap     : {pm['wall'] / nm['wall']:.2f}  (target <= 0.20)")
            print(f"portmon / (masscan + fingerprint): {pm['wall'] / base:.2f}  (target <= 1.5)")
            ratios = ", ".join(f"{wall / ms['sweep']:.2f}" for wall in walls)
            print(f"portmon / one masscan pass, each run: {ratios}  (target <= 1.1)")


if __name__ == "__main__":
    main()
