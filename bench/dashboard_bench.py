"""Server time of the dashboard pages and the CSV exports with 100,000 events, 10,000 hosts.

Usage (MariaDB; the database is created, filled, timed and dropped):
    DATABASE_URL=mysql://root@127.0.0.1:3306/portmon \
        .venv/bin/python bench/dashboard_bench.py [--events 100000] [--hosts 10000] \
        [--requests 15] [--keep]

The benchmark uses its own database, portmon_bench_dashboard by default (--db NAME when
several people bench on one server; never the one in DATABASE_URL). Requests go through
Django's test Client as a logged-in triager (the audit log as an admin): the whole server
path (middleware, session, role check, queries, template) without a socket, so the
figures are server time. Each page is requested once to warm up, then --requests times;
median and p95 are printed with the query count of one request. The CSV exports of all
events and of all ports (5 per host) are read to the end while the process's RSS is
sampled every 5,000 rows.
"""

import argparse
import os
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

BENCH_DB = "portmon_bench_dashboard"
ROOT = Path(__file__).resolve().parent.parent
BATCH = 5000
PAGE_TARGET_MS = 300
CSV_TARGET_S = 10
KINDS = [
    ("new_port", 50),
    ("closed", 20),
    ("service_changed", 12),
    ("high_risk", 8),
    ("reopened", 5),
    ("new_process", 3),
    ("blacklisted", 2),
]
STATES = [("new", 40), ("acknowledged", 20), ("fixed", 20), ("ignored", 15), ("reopened", 5)]


def bench_url(url: str, db: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("mysql", "mariadb"):
        sys.exit("dashboard_bench: DATABASE_URL must be mysql://user:pass@host:port/db (MariaDB)")
    if parts.path.strip("/") == db:
        sys.exit(f"dashboard_bench: --db {db} is DATABASE_URL's own database; name another")
    return urlunsplit(parts._replace(path=f"/{db}"))


def admin_connection(url: str):
    import MySQLdb

    parts = urlsplit(url)
    return MySQLdb.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
    )


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class QueryCounter:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        return execute(sql, params, many, context)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=15)
    parser.add_argument("--keep", action="store_true", help="do not drop the database")
    parser.add_argument(
        "--reuse", action="store_true", help="measure the database a --keep run left (migrated)"
    )
    parser.add_argument(
        "--db", default=BENCH_DB, help=f"database to create and drop (default {BENCH_DB})"
    )
    parser.add_argument("--only", default="", help="measure only pages whose name has this")
    args = parser.parse_args()
    args.keep = args.keep or args.reuse
    if not args.db.replace("_", "").isalnum():
        sys.exit("dashboard_bench: --db takes letters, digits and _ only")
    bench_db = args.db

    url = bench_url(os.environ.get("DATABASE_URL", ""), bench_db)
    admin = admin_connection(url)
    if not args.reuse:
        with admin.cursor() as c:
            c.execute(f"DROP DATABASE IF EXISTS {bench_db}")
            c.execute(
                f"CREATE DATABASE {bench_db} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
            )

    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("PORTMON_DATA_DIR", "/tmp/portmon-bench")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portmon.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    try:
        if args.reuse:
            from django.core.management import call_command

            call_command("migrate", verbosity=0)
        else:
            fill(args)
        measure(args)
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep:
            with admin.cursor() as c:
                c.execute(f"DROP DATABASE IF EXISTS {bench_db}")
        admin.close()


def _weighted(rng: random.Random, table: list[tuple[str, int]], n: int) -> list[str]:
    names, weights = zip(*table, strict=True)
    return rng.choices(names, weights=weights, k=n)


def fill(args) -> None:
    from django.core.management import call_command

    from alerts.kinds import severity_for
    from alerts.models import OPEN_STATES, AlertEvent, EventAudit, Rule, open_key_for
    from scanner.models import Host, Network, Port, ScanRun

    rng = random.Random(12)
    t0 = time.perf_counter()
    call_command("migrate", verbosity=0)
    now = datetime.now(UTC)
    nets = [
        Network.objects.create(cidr=f"198.{18 + i // 256}.{i % 256}.0/24", zone="internal")
        for i in range(0, 64)
    ]
    # 10,000 hosts over 64 /24s would not fit: hosts get addresses in 198.18.0.0/15 and the
    # network of their /24 when there is one (the rest have none, as unscoped imports do).
    net_of = {n.cidr.rsplit(".", 1)[0]: n for n in nets}
    hosts = []
    for i in range(args.hosts):
        a, b = divmod(i + 1, 256)
        prefix = f"198.{18 + a // 256}.{a % 256}"
        hosts.append(
            Host(
                ip=f"{prefix}.{b}",
                network=net_of.get(prefix),
                first_seen=now - timedelta(days=60),
                last_seen=now - timedelta(hours=rng.randint(0, 72)),
            )
        )
    Host.objects.bulk_create(hosts, batch_size=BATCH)
    host_ids = list(Host.objects.order_by("id").values_list("id", flat=True))
    ports = []
    for h in host_ids:
        for p in rng.sample([22, 80, 443, 3306, 5432, 6379, 8080, 8443, 9100, 25], 5):
            ports.append(
                Port(
                    host_id=h,
                    port=p,
                    state="open" if rng.random() < 0.9 else "closed",
                    service="ssh" if p == 22 else "http",
                    first_seen=now - timedelta(days=30),
                    last_seen=now,
                    seen_count=30,
                )
            )
    Port.objects.bulk_create(ports, batch_size=BATCH)
    runs = ScanRun.objects.bulk_create(
        [
            ScanRun(
                targets="198.18.0.0/15",
                state="finished",
                created_at=now - timedelta(days=d),
                finished_at=now - timedelta(days=d),
            )
            for d in range(30)
        ]
    )
    rules = [
        Rule.objects.create(
            action="allow" if i % 4 else "deny",
            ip_cidr=f"198.18.{i}.0/24",
            reason=f"bench rule {i}",
            owner="bench",
        )
        for i in range(20)
    ]
    kinds = _weighted(rng, KINDS, args.events)
    states = _weighted(rng, STATES, args.events)
    events = []
    used_keys = set()
    for i in range(args.events):
        host_id = rng.choice(host_ids)
        port = rng.choice([22, 80, 443, 3306, 8080, rng.randint(1024, 65535)])
        at = now - timedelta(seconds=rng.randint(0, 30 * 86400))
        key = open_key_for(host_id, "tcp", port, kinds[i])
        # One open event per key, as the event path guarantees.
        is_open = states[i] in OPEN_STATES and key not in used_keys
        used_keys.add(key)
        rule = rules[i % 20] if i % 10 == 0 else None
        events.append(
            AlertEvent(
                host_id=host_id,
                proto="tcp",
                port=port,
                kind=kinds[i],
                state=states[i] if is_open or states[i] not in OPEN_STATES else "fixed",
                run=runs[(now - at).days % 30],
                created_at=at,
                updated_at=at,
                detail={"zone": "internal", "service": "http"},
                suppressed=rule is not None and rule.action == "allow",
                rule=rule,
                severity=severity_for(kinds[i]),
                immediate=kinds[i] in ("high_risk", "blacklisted"),
                open_key=key if is_open else None,
            )
        )
    AlertEvent.objects.bulk_create(events, batch_size=BATCH)
    del events
    audit = [
        EventAudit(event_id=pk, action="raised", to_state="new", at=at)
        for pk, at in AlertEvent.objects.values_list("pk", "created_at").iterator(chunk_size=BATCH)
    ]
    EventAudit.objects.bulk_create(audit, batch_size=BATCH)
    print(
        f"filled {len(host_ids):,} hosts, {len(ports):,} ports, {args.events:,} events "
        f"(+ {len(audit):,} audit rows) in {time.perf_counter() - t0:.1f} s"
    )


def measure(args) -> None:
    from django.contrib.auth.models import Group, User
    from django.db import connection
    from django.test import Client

    from alerts.models import AlertEvent
    from scanner.models import Host

    user, created = User.objects.get_or_create(username="bench-triager")
    if created:
        user.groups.add(Group.objects.get(name="triager"))
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(user)
    boss, created = User.objects.get_or_create(username="bench-admin")
    if created:
        boss.groups.add(Group.objects.get(name="admin"))
    admin_client = Client(HTTP_HOST="127.0.0.1")
    admin_client.force_login(boss)

    # A host with events (about ten, as every host has) and one of them.
    busiest = AlertEvent.objects.order_by("-id").values_list("host_id", flat=True)[0]
    host_ip = Host.objects.get(pk=busiest).ip
    event_id = AlertEvent.objects.filter(host_id=busiest).values_list("pk", flat=True)[0]
    today = datetime.now(UTC).date()
    run_id = AlertEvent.objects.order_by("-id").values_list("run_id", flat=True)[0]
    pages = [
        ("events list", "/events/"),
        ("events list, page 1000", "/events/?page=1000"),
        ("events, state=open severity>=high", "/events/?state=open&severity=high"),
        ("events, kind=new_port port=443", "/events/?kind=new_port&port=443"),
        ("events, network + last 7 days", f"/events/?network=1&since={today - timedelta(7)}"),
        ("events, host CIDR /16 (all hosts)", "/events/?host=198.18.0.0/16&state=new"),
        ("events, host CIDR /19 (80% of hosts)", "/events/?host=198.18.0.0/19"),
        ("events, host CIDR /22 (10% of hosts)", "/events/?host=198.18.0.0/22"),
        ("events, suppressed=yes rule=1", "/events/?suppressed=yes&rule=1"),
        ("events, search an address part", "/events/?q=198.19.1"),
        ("events, search a service", "/events/?q=http"),
        ("events, search a port, all states", "/events/?q=3306&state=all"),
        ("event page", f"/events/{event_id}/"),
        ("hosts list", "/hosts/"),
        ("hosts list, page 150", "/hosts/?page=150"),
        ("hosts, search 198.19.", "/hosts/?q=198.19."),
        ("host page", f"/hosts/{host_ip}/"),
        ("overview", "/"),
        (
            "events, exactly medium (overview link)",
            "/events/?state=open&severity=medium&severity_max=medium&suppressed=no",
        ),
        ("since last visit", "/since/"),
        ("runs list", "/runs/"),
        ("run page", f"/runs/{run_id}/"),
        ("rules", "/rules/"),
        ("networks", "/networks/"),
        ("agents", "/agents/"),
        ("policies", "/policies/"),
        ("audit log (admin)", "/audit/"),
        ("API: events", "/api/events/"),
        ("API: events, page 500", "/api/events/?page=500"),
        ("API: events, state=new kind=high_risk", "/api/events/?state=new&kind=high_risk"),
        ("API: hosts", "/api/hosts/"),
        ("API: ports", "/api/ports/"),
        ("API: ports, page 500", "/api/ports/?page=500"),
    ]
    worst = 0.0
    print(f"\n{'page':<40} {'median':>9} {'p95':>9} {'queries':>8}")
    for name, path in pages:
        if args.only not in name:
            continue
        client_of_page = admin_client if path == "/audit/" else client
        response = client_of_page.get(path)
        assert response.status_code == 200, (path, response.status_code)
        queries = QueryCounter()
        # Counted by a wrapper, not CaptureQueriesContext: its log is capped at 9,000.
        with connection.execute_wrapper(queries):
            client_of_page.get(path)
        times = []
        for _ in range(args.requests):
            t = time.perf_counter()
            response = client_of_page.get(path)
            times.append((time.perf_counter() - t) * 1000)
            assert response.status_code == 200
        times.sort()
        p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
        worst = max(worst, p95)
        print(f"{name:<40} {statistics.median(times):>7.1f}ms {p95:>7.1f}ms {queries.count:>8}")
    verdict = "met" if worst <= PAGE_TARGET_MS else "MISSED"
    print(f"pages target <= {PAGE_TARGET_MS} ms (p95): {verdict}")

    if args.only:
        return
    # The CSV exports, read to the end as a browser would download them.
    csv_measure(client, "CSV of all events", "/events/export.csv")
    csv_measure(client, "CSV of all ports", "/ports/export.csv?state=all")


def csv_measure(client, name: str, path: str) -> None:
    """Read a CSV export to the end, sampling the process's RSS every 5,000 rows."""
    before = rss_mib()
    samples = []
    rows = size = 0
    t = time.perf_counter()
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    for chunk in response.streaming_content:
        size += len(chunk)
        rows += 1
        if rows % 5000 == 0:
            samples.append(rss_mib())
    elapsed = time.perf_counter() - t
    samples.append(rss_mib())
    print(
        f"\n{name}: {rows - 1:,} rows, {size / 2**20:.1f} MiB in {elapsed:.2f} s; "
        f"RSS before {before:.0f} MiB, during {min(samples):.0f}-{max(samples):.0f} MiB "
        f"(at 10%: {samples[len(samples) // 10]:.0f}, 50%: {samples[len(samples) // 2]:.0f}, "
        f"end: {samples[-1]:.0f})"
    )
    print(f"{name}: target <= {CSV_TARGET_S} s: {'met' if elapsed <= CSV_TARGET_S else 'MISSED'}")


if __name__ == "__main__":
    main()
