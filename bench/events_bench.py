"""Wall time and peak memory of `manage.py events --json` over many events.

Usage:
    .venv/bin/python bench/events_bench.py [--events 250000] [--keep]

It migrates a fresh SQLite database in a temporary PORTMON_DATA_DIR, inserts the events
(100 ports per host, a small detail dict each, as the diff writes them), then runs
`manage.py events --json --limit N` in a child process with stdout to a file. Peak memory
is that child's ru_maxrss (os.wait4). `--limit N` works on the old command too (it had no
"0 means all"), so the same script measures before and after.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PORTS_PER_HOST = 100
# Rows per bulk_create: one INSERT statement per batch keeps the set-up to seconds.
INSERT_BATCH = 5000


def populate(events: int) -> None:
    import django

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portmon.settings")
    django.setup()
    from django.core.management import call_command

    from alerts.models import AlertEvent, open_key_for
    from scanner.models import Host

    call_command("migrate", verbosity=0)
    hosts_needed = -(-events // PORTS_PER_HOST)
    Host.objects.bulk_create(
        [Host(ip=f"198.18.{i // 250}.{i % 250 + 1}") for i in range(hosts_needed)],
        batch_size=INSERT_BATCH,
    )
    host_ids = list(Host.objects.order_by("id").values_list("id", flat=True))
    start = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)
    batch = []
    for n in range(events):
        host_id, port = host_ids[n // PORTS_PER_HOST], 1000 + n % PORTS_PER_HOST
        batch.append(
            AlertEvent(
                host_id=host_id,
                proto="tcp",
                port=port,
                kind="new_port",
                # One run a day: many events share a created_at, as the diff writes them.
                created_at=start + timedelta(days=n // 10_000),
                open_key=open_key_for(host_id, "tcp", port, "new_port"),
                detail={"reason": "not seen in 3 days", "fingerprint": {"service": "http"}},
            )
        )
        if len(batch) == INSERT_BATCH:
            AlertEvent.objects.bulk_create(batch)
            batch = []
    AlertEvent.objects.bulk_create(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=250_000)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if not 1 <= args.events <= 2_000_000:
        sys.exit("events_bench: --events must be 1-2,000,000")

    work = Path(tempfile.mkdtemp(prefix="pm-events-bench-"))
    os.environ["PORTMON_DATA_DIR"] = str(work)
    os.environ["DATABASE_URL"] = f"sqlite:///{work}/bench.sqlite3"
    populate(args.events)

    output = work / "events.json"
    argv = [sys.executable, str(ROOT / "manage.py"), "events", "--json"]
    started = time.monotonic()
    with output.open("wb") as out:
        child = subprocess.Popen([*argv, "--limit", str(args.events)], cwd=ROOT, stdout=out)
        _pid, status, usage = os.wait4(child.pid, 0)
    wall = time.monotonic() - started
    code = os.waitstatus_to_exitcode(status)

    print(f"events --json: {args.events:,} events, {output.stat().st_size / 2**20:.0f} MiB of JSON")
    # ru_maxrss is in KiB on Linux.
    print(f"exit {code}, wall time {wall:.1f} s, peak RSS {usage.ru_maxrss / 1024:.0f} MiB")
    if args.keep:
        print(f"kept {work}")
    else:
        shutil.rmtree(work)
    sys.exit(code)


if __name__ == "__main__":
    main()
