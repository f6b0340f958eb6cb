"""How long does the diff take for 10,000 hosts x 20 ports with 3 days of history?

Usage (MariaDB; the database is created, filled, timed and dropped):
    DATABASE_URL=mysql://portmon:portmon@127.0.0.1:3306/portmon \
        .venv/bin/python bench/diff_bench.py [--hosts 10000] [--ports 20] [--keep]

The benchmark uses its own database, <name>_bench (never the one in DATABASE_URL).
History: three daily runs that saw every port. The timed run sees 99% of the ports (1%
missed by the scan), 0.5% new ports (some high-risk) and 0.1% changed services; 20 rules.
Only the diff (alerts.services.diff.run_diff) is timed; recording the run is the scanner's.
"""

import argparse
import os
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

# Named after the configured database (portmon -> portmon_bench): benches run from
# several checkouts with their own databases do not collide.
BENCH_SUFFIX = "_bench"
ROOT = Path(__file__).resolve().parent.parent
# Rows per executemany: MySQLdb folds them into one multi-row INSERT.
INSERT_BATCH = 5000
SERVICES = ["http", "https", "ssh", "smtp", "imap", "ldap", "dns", "ntp", "snmp", "rdp"]


def bench_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("mysql", "mariadb"):
        sys.exit("diff_bench: DATABASE_URL must be mysql://user:pass@host:port/db (MariaDB)")
    return urlunsplit(parts._replace(path=f"/{bench_db(url)}"))


def bench_db(url: str) -> str:
    name = urlsplit(url).path.strip("/").removesuffix(BENCH_SUFFIX) or "portmon"
    return name + BENCH_SUFFIX


def admin_connection(url: str):
    import MySQLdb

    parts = urlsplit(url)
    return MySQLdb.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
    )


def insert(cursor, table: str, columns: list[str], rows: list[tuple]) -> None:
    sql = (
        f"INSERT INTO {table} ({', '.join(columns)}) "  # noqa: S608 (constant names)
        f"VALUES ({', '.join(['%s'] * len(columns))})"
    )
    for start in range(0, len(rows), INSERT_BATCH):
        cursor.executemany(sql, rows[start : start + INSERT_BATCH])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--ports", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help="do not drop the database")
    args = parser.parse_args()

    url = bench_url(os.environ.get("DATABASE_URL", ""))
    name = bench_db(url)
    admin = admin_connection(url)
    with admin.cursor() as c:
        c.execute(f"DROP DATABASE IF EXISTS {name}")
        c.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")

    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("PORTMON_DATA_DIR", "/tmp/portmon-bench")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portmon.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    try:
        run_bench(args)
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep:
            with admin.cursor() as c:
                c.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.close()


def run_bench(args) -> None:
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from alerts.models import AlertEvent, Rule
    from alerts.services.diff import run_diff
    from scanner.models import (
        CoverageSpan,
        Host,
        Network,
        Port,
        PortObservation,
        ScanPolicy,
        ScanRun,
    )
    from scanner.services.results import run_counts_record

    rng = random.Random(42)
    call_command("migrate", verbosity=0)
    today = datetime.now(UTC).replace(hour=2, minute=0, second=0, microsecond=0)
    history_days = [today - timedelta(days=d) for d in (3, 2, 1)]

    t0 = time.perf_counter()
    net = Network.objects.create(cidr="198.18.0.0/15", zone="internal")
    # The history's runs covered the /15 on every port: a port never seen is news.
    CoverageSpan.objects.create(
        network=net, at=history_days[0], addresses="3323068416-3323199487", ports="1-65535"
    )
    policy = ScanPolicy.objects.create(name="bench", targets="198.18.0.0/15")
    base = int.from_bytes(bytes([198, 18, 0, 0]), "big")
    ips = [".".join(str(b) for b in (base + 1 + i).to_bytes(4, "big")) for i in range(args.hosts)]
    Host.objects.bulk_create(
        [
            Host(ip=ip, network=net, first_seen=history_days[0], last_seen=history_days[-1])
            for ip in ips
        ],
        batch_size=INSERT_BATCH,
    )
    host_ids = list(Host.objects.order_by("id").values_list("id", flat=True))
    # Ports 10000+ are not on the high-risk list; each host has its own 20.
    ports_of = {h: rng.sample(range(10_000, 60_000), args.ports) for h in host_ids}
    keys = [(h, p) for h in host_ids for p in ports_of[h]]
    fp_of = {k: rng.choice(SERVICES) for k in keys}

    run_cols = [
        "policy_id",
        "source",
        "targets",
        "ports",
        "rate",
        "engine",
        "zone",
        "fingerprint",
        "state",
        "created_at",
        "started_at",
        "finished_at",
        "hosts_found",
        "ports_found",
        "degraded",
        "diffed_at",
        "error",
        "baseline",
        "probes_allowed",
    ]
    obs_cols = [
        "run_id",
        "host_id",
        "proto",
        "port",
        "seen_at",
        "fingerprinted",
        "service",
        "product",
        "version",
        "extrainfo",
        "cpe",
        "fingerprint_claim",
    ]
    with connection.cursor() as c:
        for day in history_days:
            insert(
                c,
                "scanner_scanrun",
                run_cols,
                [
                    (
                        policy.pk,
                        "scan",
                        "198.18.0.0/15",
                        "1-65535",
                        100000,
                        "auto",
                        "internal",
                        1,
                        "finished",
                        day,
                        day,
                        day,
                        len(host_ids),
                        len(keys),
                        0,
                        day,
                        "",
                        "[]",
                        1,
                    )
                ],
            )
            run_id = ScanRun.objects.get(finished_at=day).pk
            insert(
                c,
                "scanner_portobservation",
                obs_cols,
                [(run_id, h, "tcp", p, day, 1, fp_of[(h, p)], "", "", "", "", "") for h, p in keys],
            )
        port_cols = [
            "host_id",
            "proto",
            "port",
            "state",
            "first_seen",
            "last_seen",
            "seen_count",
            "missed_runs",
            "fingerprinted_at",
            "service",
            "product",
            "version",
            "extrainfo",
            "cpe",
        ]
        insert(
            c,
            "scanner_port",
            port_cols,
            [
                (
                    h,
                    "tcp",
                    p,
                    "open",
                    history_days[0],
                    history_days[-1],
                    3,
                    0,
                    history_days[-1],
                    fp_of[(h, p)],
                    "",
                    "",
                    "",
                    "",
                )
                for h, p in keys
            ],
        )
    for i in range(20):
        lo = 20_000 + i * 1000
        Rule.objects.create(
            action="allow" if i % 2 else "deny",
            port_lo=lo,
            port_hi=lo + 9,
            reason=f"bench rule {i}",
            owner="bench",
        )
    fill = time.perf_counter() - t0

    # Today's run: 1% missed, 0.5% new ports (a tenth of them high-risk), 0.1% changed.
    missed = set(rng.sample(keys, len(keys) // 100))
    changed = set(rng.sample(keys, len(keys) // 1000))
    new = []
    for h in rng.sample(host_ids, len(keys) // 200):
        new.append((h, 3306 if rng.random() < 0.1 else rng.randrange(60_001, 65_535)))
    seen = [k for k in keys if k not in missed] + new
    run = ScanRun.objects.create(
        policy=policy,
        targets="198.18.0.0/15",
        state="finished",
        created_at=today,
        started_at=today,
        finished_at=today,
    )
    with connection.cursor() as c:
        insert(
            c,
            "scanner_portobservation",
            obs_cols,
            [
                (
                    run.pk,
                    h,
                    "tcp",
                    p,
                    today,
                    1,
                    "mysql" if (h, p) in changed else fp_of.get((h, p), "http"),
                    "",
                    "",
                    "",
                    "",
                    "",
                )
                for h, p in seen
            ],
        )
    t1 = time.perf_counter()
    run_counts_record(run=run)
    record = time.perf_counter() - t1

    with CaptureQueriesContext(connection) as queries:
        t2 = time.perf_counter()
        result = run_diff(run_id=run.pk)
        elapsed = time.perf_counter() - t2

    observations = PortObservation.objects.count()
    print(
        f"hosts {len(host_ids)}, ports {len(keys)}, observations {observations} "
        f"(3 days of history + today's run)"
    )
    print(f"fill {fill:.1f} s, record today's run (scanner) {record:.1f} s")
    print(f"diff: {elapsed:.2f} s, {len(queries.captured_queries)} queries")
    print(
        f"  seen {result.seen}, missed {result.missed}, closed {result.closed}, "
        f"degraded {result.degraded}, events {dict(result.created)}"
    )
    print(
        f"  expected: new {len(new)}, changed {len(changed)}, missed {len(missed)}; "
        f"events in db {AlertEvent.objects.count()}, open ports "
        f"{Port.objects.filter(state='open').count()}"
    )
    slowest = sorted(queries.captured_queries, key=lambda q: -float(q["time"]))[:3]
    for q in slowest:
        print(f"  query {float(q['time']):.2f} s: {q['sql'][:110]}")
    print(f"target <= 10 s: {'met' if elapsed <= 10 else 'MISSED'}")


if __name__ == "__main__":
    main()
