"""How right are the alerts over a month? A generated month scored against its known changes.

Usage (SQLite in a temporary folder by default; with a MariaDB DATABASE_URL it uses its own
database, <name>_quality_bench, created and dropped):
    .venv/bin/python bench/alert_quality_bench.py [--hosts 1000] [--days 30] [--seed 15] \
        [--pacing all|in_process,one_by_one,all_at_once:1,all_at_once:4,worker_later:2,...]
    DATABASE_URL=mysql://root@127.0.0.1:3306/portmon .venv/bin/python bench/alert_quality_bench.py

Pacing (tests/alerts/month.py, PACINGS): in_process diffs each import in this process;
the others start a real `celery worker` on the default queue (":N" its concurrency) and
import with scan_import as a user would: one by one waiting for each diff, all at once
with the worker running, or all with no worker and then one. Each mode gets a fresh
database (the bench runs itself once per mode) and prints precision and recall.

The month (tests/alerts/month.py): ~1,000 hosts, 30 daily nmap XML files, random per-port
misses of 1-2%, real openings (some high-risk), new hosts, closures, absences of 2 and 5
days, service changes, coverage growing mid-month, fingerprinting switched on, one degraded
day. Each file goes through manage.py scan_import and the diff; the events raised are
compared with the changes the generator made: precision and recall, target >= 0.99.
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
TARGET = 0.99


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--pacing", default="in_process")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.child:
        return run_modes(args)
    work = Path(tempfile.mkdtemp(prefix="portmon-quality-"))
    url = os.environ.get("DATABASE_URL", "")
    mysql = urlsplit(url).scheme in ("mysql", "mariadb")
    if mysql:
        import MySQLdb

        parts = urlsplit(url)
        # Named after the configured database: benches of several checkouts do not collide.
        bench_db = f"{parts.path.strip('/') or 'portmon'}_quality_bench"
        admin = MySQLdb.connect(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 3306,
            user=parts.username or "root",
            password=parts.password or "",
        )
        with admin.cursor() as c:
            c.execute(f"DROP DATABASE IF EXISTS {bench_db}")
            c.execute(
                f"CREATE DATABASE {bench_db} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
            )
        os.environ["DATABASE_URL"] = urlunsplit(parts._replace(path=f"/{bench_db}"))
    else:
        os.environ["DATABASE_URL"] = f"sqlite:///{work}/bench.sqlite3"
    # Its own data folder and the embedded broker: the diffs the imports queue on commit go
    # to a folder that only the bench's own worker reads (in_process: nobody; the bench
    # diffs each day itself), and nothing is scanned or probed (imports never probe).
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
                c.execute(f"DROP DATABASE IF EXISTS {bench_db}")
        shutil.rmtree(work, ignore_errors=True)


ALL = "in_process,one_by_one,all_at_once:1,all_at_once:4,worker_later:2,shuffled_later:2"


def run_modes(args) -> int:
    """Run the bench once per pacing mode, each in a process (and database) of its own."""
    modes = (ALL if args.pacing == "all" else args.pacing).split(",")
    failed = 0
    for mode in modes:
        print(f"--- pacing {mode}", flush=True)
        argv = [sys.executable, __file__, "--child", "--pacing", mode]
        argv += ["--hosts", str(args.hosts), "--days", str(args.days), "--seed", str(args.seed)]
        failed += subprocess.run(argv, cwd=ROOT).returncode != 0
    return 1 if failed else 0


def worker_start(work: Path, concurrency: int) -> subprocess.Popen:
    """A real worker on the default queue, with the bench's database and broker."""
    log = work / "worker.log"
    argv = [sys.executable, "-m", "celery", "-A", "portmon", "worker", "--loglevel", "INFO",
            "--queues", "default", "--concurrency", str(concurrency), "--hostname",
            "bench@quality", "--without-gossip", "--without-mingle",
            "--without-heartbeat"]  # fmt: skip
    proc = subprocess.Popen(
        argv, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + 60
    while "ready." not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"worker did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.2)
    return proc


def worker_stop(proc: subprocess.Popen) -> None:
    """Warm shutdown; a worker still busy after 30 s (its filesystem broker poll, a pool
    child) is killed with its process group (the one it was started in)."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def run_bench(args, work: Path) -> int:
    from django.core.management import call_command
    from django.db import connection

    from scanner.models import Network
    from tests.alerts.month import NET, month_generate, month_import

    pacing, _, concurrency = args.pacing.partition(":")
    call_command("migrate", verbosity=0)
    Network.objects.create(cidr=NET, zone="internal")
    started = time.monotonic()
    month = month_generate(work / "month", hosts=args.hosts, days=args.days, seed=args.seed)
    generated = time.monotonic() - started
    workers = []

    def start_worker():
        connection.close()  # the worker is another process; this one reconnects later
        workers.append(worker_start(work, int(concurrency or 1)))

    started = time.monotonic()
    try:
        score = month_import(month, pacing=pacing, start_worker=start_worker, timeout=1800)
    finally:
        for proc in workers:
            worker_stop(proc)
    imported = time.monotonic() - started
    log = work / "worker.log"
    if workers and ("Traceback" in log.read_text()):
        print(f"worker log has a traceback:\n{log.read_text()[-3000:]}")
    print(
        f"pacing {args.pacing}; database {connection.vendor}; "
        + ", ".join(f"{k} {v}" for k, v in month.planned.items())
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
