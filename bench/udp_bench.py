"""UDP benchmark on the namespace lab: Portmon's UDP sweep vs a plain `nmap -sU -sV`.

    sudo .venv/bin/python bench/udp_bench.py [--hosts 20] [--loss 0.005] [--on-link]
                                            [--rate 2000] [--skip-nmap]

Both get the same hosts and Portmon's default UDP list (scanner.targets.UDP_DEFAULT_PORTS).
Every lab host runs three UDP services (tests/lab/udp_services.py: SNMP public, memcached,
DNS, NTP, SSDP), one bound port that never answers (69) and nothing else (closed).

Portmon runs through its real path, `manage.py scan --ports '' --udp-ports default --local`
on a fresh SQLite database: masscan's UDP sweep (routed lab) or the UDP prober (--on-link),
each candidate confirmed, then nmap -sU -sV on the open ports only. Prints, for each:
wall time, open ports found / truth, named, false opens (a silent or closed port listed).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scanner.engines.nmap import parse_xml  # noqa: E402
from scanner.targets import UDP_DEFAULT_PORTS  # noqa: E402
from tests.lab import Lab  # noqa: E402

PY = sys.executable


def report(name: str, seconds: float, found: dict, lab: Lab) -> None:
    truth = lab.udp_open_ports
    hits = set(found) & truth
    false = set(found) - truth
    named = sum(1 for key in hits if found[key])
    print(
        f"{name:<28} {seconds:7.1f} s   found {len(hits)}/{len(truth)} "
        f"({100.0 * len(hits) / len(truth):.1f}%)   named {named}/{len(hits)}   "
        f"false open {len(false)}"
    )
    if false:
        print(f"  false opens: {sorted(false)[:10]}")


def portmon(lab: Lab, rate: int) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory(prefix="portmon-udp-bench-") as tmp:
        env = {
            **os.environ,
            "PORTMON_DATA_DIR": tmp,
            "DATABASE_URL": f"sqlite:///{tmp}/db.sqlite3",
            "CELERY_BROKER_URL": "",
        }
        env.pop("PORTMON_TEST_REDIS_URL", None)
        manage = [PY, str(ROOT / "manage.py")]
        subprocess.run([*manage, "migrate", "-v0"], env=env, check=True, cwd=ROOT)
        subprocess.run(
            [*manage, "scope", "add", lab.cidr, "--zone", "internal"],
            env=env,
            check=True,
            cwd=ROOT,
            capture_output=True,
        )
        start = time.monotonic()
        scan = subprocess.run(
            [*manage, "scan", *lab.hosts, "--ports", "", "--udp-ports", "default", "--local"]
            + ["--json", "--rate", str(rate)],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        seconds = time.monotonic() - start
    if scan.returncode not in (0, 2):
        raise SystemExit(f"portmon scan failed ({scan.returncode}): {scan.stderr[-2000:]}")
    rows = json.loads(scan.stdout)
    return seconds, {(r["ip"], r["port"]): r["service"] for r in rows if r["proto"] == "udp"}


def plain_nmap(lab: Lab) -> tuple[float, dict]:
    start = time.monotonic()
    out = subprocess.run(
        ["nmap", "-sU", "-sV", "-Pn", "-n", "-p", UDP_DEFAULT_PORTS, "-oX", "-", *lab.hosts],
        capture_output=True,
        text=True,
    )
    seconds = time.monotonic() - start
    found = {}
    for host in parse_xml(out.stdout):
        for f in host.findings:
            if f.proto == "udp":
                found[(f.ip, f.port)] = f.service
    return seconds, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--loss", type=float, default=0.005)
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--on-link", action="store_true")
    parser.add_argument("--skip-nmap", action="store_true")
    args = parser.parse_args()
    with Lab(
        hosts=args.hosts,
        ports_per_host=(0, 0),
        loss=args.loss,
        seed=17,
        udp_hosts=args.hosts,
        on_link=args.on_link,
    ) as lab:
        ports = len(UDP_DEFAULT_PORTS.split(","))
        print(
            f"lab {lab.cidr} ({'on-link' if args.on_link else 'routed'}), {len(lab.hosts)} hosts"
            f" x {ports} UDP ports, {len(lab.udp_open_ports)} answering, "
            f"{len(lab.udp_silent)} silent, loss {args.loss:.1%}"
        )
        report("portmon (sweep + -sU -sV)", *portmon(lab, args.rate), lab)
        if not args.skip_nmap:
            report("nmap -sU -sV", *plain_nmap(lab), lab)
        drops = sum(lab.egress_drops().values())
        print(f"egress guard drops: {drops}")


if __name__ == "__main__":
    main()
