"""How right are the alerts over a month? A generated month scored against its known changes.

Usage (SQLite in a temporary folder by default; with a MariaDB DATABASE_URL it uses its own
database, portmon_quality_bench, created and dropped):
    .venv/bin/python bench/alert_quality_bench.py [--hosts 1000] [--days 30] [--seed 15]
    DATABASE_URL=mysql://root@127.0.0.1:3306/portmon .venv/bin/python bench/alert_quality_bench.py

The month (tests/alerts/month.py): ~1,000 hosts, 30 daily nmap XML files, random per-port
misses of 1-2%, real openings (some high-risk), new hosts, closures, absences of 2 and 5
days, service changes, coverage growing mid-month, fingerprinting switched on, one degraded
day. Each file goes through manage.py scan_import and the diff; the events raised are
compared with the changes the generator made: precision and recall, target >= 0.99.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB = "portmon_quality_bench"
TARGET = 0.99


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=15)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="portmon-quality-"))
    url = os.environ.get("DATABASE_URL", "")
    mysql = urlsplit(url).scheme in ("mysql", "mariadb")
    if mysql:
        import MySQLdb

        parts = urlsplit(url)
        admin = MySQLdb.connect(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 3306,
            user=parts.username or "root",
            password=parts.password or "",
        )
        with admin.cursor() as c:
            c.execute(f"DROP DATABASE IF EXISTS {BENCH_DB}")
            c.execute(
                f"CREATE DATABASE {BENCH_DB} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
            )
        os.environ["DATABASE_URL"] = urlunsplit(parts._replace(path=f"/{BENCH_DB}"))
    else:
        os.environ["DATABASE_URL"] = f"sqlite:///{work}/bench.sqlite3"
    # Its own data folder and the embedded broker: the diffs and sends the imports queue on
    # commit go to a folder nobody reads (the bench diffs each day itself, in order), and
    # nothing is scanned or chained.
    os.environ["PORTMON_DATA_DIR"] = str(work)
    os.environ["CELERY_BROKER_URL"] = "filesystem://"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portmon.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    try:
        return run_bench(args, work)
    finally:
        from django.db import connections

        connections.close_all()
        if mysql:
            with admin.cursor() as c:
                c.execute(f"DROP DATABASE IF EXISTS {BENCH_DB}")
        shutil.rmtree(work, ignore_errors=True)


def run_bench(args, work: Path) -> int:
    from django.core.management import call_command
    from django.db import connection

    from scanner.models import Network
    from tests.alerts.month import NET, month_generate, month_import

    call_command("migrate", verbosity=0)
    Network.objects.create(cidr=NET, zone="internal")
    started = time.monotonic()
    month = month_generate(work / "month", hosts=args.hosts, days=args.days, seed=args.seed)
    generated = time.monotonic() - started
    started = time.monotonic()
    score = month_import(month)
    imported = time.monotonic() - started
    print(
        f"database {connection.vendor}; " + ", ".join(f"{k} {v}" for k, v in month.planned.items())
    )
    print(
        f"generate {generated:.1f} s, import + diff {imported:.1f} s "
        f"({imported / args.days:.2f} s/day)"
    )
    print(score.report())
    met = score.precision >= TARGET and score.recall >= TARGET
    print(f"target precision and recall >= {TARGET}: {'met' if met else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
