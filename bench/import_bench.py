"""Wall time and peak memory of `manage.py scan_import` on a large generated file.

Usage:
    .venv/bin/python bench/import_bench.py [--hosts 100000] [--format nmap|masscan] [--keep]

It writes a results file with one open port per host (nmap: a realistic -sV host entry,
~440 bytes; masscan: one -oJ record), migrates a fresh SQLite database in a temporary
PORTMON_DATA_DIR, adds 198.18.0.0/15 to the scope and times `manage.py scan_import` in a
child process. Peak memory is that child's ru_maxrss (os.wait4: the import alone, not the
migrate before it). Nothing is scanned: the addresses only sit in the file.
"""

import argparse
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The RFC 2544 benchmarking range: 131,072 addresses, so up to that many hosts.
NETWORK = ipaddress.ip_network("198.18.0.0/15")

NMAP_HEAD = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE nmaprun>
<?xml-stylesheet href="file:///usr/bin/../share/nmap/nmap.xsl" type="text/xsl"?>
<nmaprun scanner="nmap" args="nmap -sV -oX - 198.18.0.0/15" start="1795246063" version="7.93" xmloutputversion="1.05">
<scaninfo type="syn" protocol="tcp" numservices="1" services="22"/>
<verbose level="0"/>
<debugging level="0"/>
"""  # noqa: E501
NMAP_HOST = """<host starttime="1795246063" endtime="1795246068"><status state="up" reason="syn-ack" reason_ttl="63"/>
<address addr="{ip}" addrtype="ipv4"/>
<hostnames>
</hostnames>
<ports><port protocol="tcp" portid="22"><state state="open" reason="syn-ack" reason_ttl="63"/><service name="ssh" product="OpenSSH" version="9.2p1" extrainfo="protocol 2.0" method="probed" conf="10"><cpe>cpe:/a:openbsd:openssh:9.2p1</cpe></service></port>
</ports>
<times srtt="390" rttvar="3802" to="100000"/>
</host>
"""  # noqa: E501
NMAP_TAIL = '<runstats><finished time="1795246999" exit="success"/></runstats>\n</nmaprun>\n'


def write_file(path: Path, *, hosts: int, fmt: str) -> None:
    addresses = (str(NETWORK[i + 1]) for i in range(hosts))
    with path.open("w") as out:
        if fmt == "nmap":
            out.write(NMAP_HEAD)
            for ip in addresses:
                out.write(NMAP_HOST.format(ip=ip))
            out.write(NMAP_TAIL)
            return
        out.write("[\n")
        for n, ip in enumerate(addresses):
            entry = {"port": 22, "proto": "tcp", "status": "open", "reason": "syn-ack", "ttl": 64}
            record = {"ip": ip, "timestamp": "1795246063", "ports": [entry]}
            out.write(("" if n == 0 else ",\n") + json.dumps(record))
        out.write("\n]\n")


def manage(*args: str, env: dict) -> list[str]:
    return [sys.executable, str(ROOT / "manage.py"), *args]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=100_000)
    parser.add_argument("--format", choices=["nmap", "masscan"], default="nmap")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if not 1 <= args.hosts < NETWORK.num_addresses - 1:
        sys.exit(f"import_bench: --hosts must be 1-{NETWORK.num_addresses - 2}")

    work = Path(tempfile.mkdtemp(prefix="pm-import-bench-"))
    env = {
        **os.environ,
        "PORTMON_DATA_DIR": str(work),
        "DATABASE_URL": f"sqlite:///{work}/bench.sqlite3",
    }
    results = work / ("results.xml" if args.format == "nmap" else "results.json")
    write_file(results, hosts=args.hosts, fmt=args.format)
    size = results.stat().st_size
    subprocess.run(manage("migrate", "-v0", env=env), env=env, check=True, cwd=ROOT)
    subprocess.run(
        manage("scope", "add", str(NETWORK), "--zone", "internal", env=env),
        env=env,
        check=True,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )

    started = time.monotonic()
    child = subprocess.Popen(
        manage("scan_import", str(results), env=env), env=env, cwd=ROOT, stdout=subprocess.PIPE
    )
    output = child.stdout.read().decode()
    _pid, status, usage = os.wait4(child.pid, 0)
    wall = time.monotonic() - started
    child.returncode = os.waitstatus_to_exitcode(status)

    print(f"file: {args.format}, {args.hosts:,} hosts, {size / 2**20:.1f} MiB")
    print(f"scan_import: {output.strip()} (exit {child.returncode})")
    # ru_maxrss is in KiB on Linux.
    print(f"wall time {wall:.1f} s, peak RSS {usage.ru_maxrss / 1024:.0f} MiB")
    if args.keep:
        print(f"kept {work}")
    else:
        shutil.rmtree(work)
    sys.exit(child.returncode)


if __name__ == "__main__":
    main()
