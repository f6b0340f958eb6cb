"""The sweep worker as an unprivileged user: CAP_NET_RAW is all masscan needs, and without it
a masscan shard fails with a message that says how to grant it; the connect engine still works.

The worker runs as nobody through setpriv, the way portmon-sweep@.service runs it as portmon
with AmbientCapabilities=CAP_NET_RAW. Every probe goes to the lab's own hosts.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection

from scanner.engines import privileges
from scanner.models import PortObservation, RunState, ScanShard, ShardState
from scanner.services.runs import run_start
from tests.conftest import ROOT
from tests.lab import Lab
from tests.scanner.test_pipeline import wait_run
from tests.scanner.unprivileged import NOBODY, as_nobody

# --- without a lab -------------------------------------------------------------------------
STATUS = "Name:\tpython\nCapInh:\t0000000000000000\nCapEff:\t0000000000002000\nCapBnd:\t1ff\n"


def test_it_reads_the_effective_capability_set_not_the_uid():
    mask = privileges.parse_effective(STATUS)

    assert privileges.has_capability("CAP_NET_RAW", mask)
    assert not privileges.has_capability("CAP_NET_ADMIN", mask)
    assert privileges.parse_effective("Name:\tx\n") == 0


@pytest.mark.process
@pytest.mark.parametrize("caps, expected", [("+net_raw", "None"), ("-all", "masscan needs")])
def test_it_knows_whether_this_process_may_run_masscan(caps, expected, tmp_path):
    probe = "from scanner.engines import masscan; print(masscan.unavailable_reason())"
    result = subprocess.run(
        [*as_nobody(caps, tmp_path / "stage"), sys.executable, "-c", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(expected)


# --- the lab -------------------------------------------------------------------------------
@contextmanager
def writable_by_nobody():
    """A data directory for the worker, and the SQLite test database opened to it if used.

    SQLite in WAL mode writes beside the database file, so its directory must be writable
    too; the old modes come back afterwards. MariaDB needs nothing.
    """
    data_dir = Path(tempfile.mkdtemp(prefix="portmon-sweep-"))
    os.chown(data_dir, NOBODY, NOBODY)
    restore: dict[Path, int] = {}
    if connection.vendor == "sqlite":
        db = Path(connection.settings_dict["NAME"])
        for path in [db.parent, db, *db.parent.glob(db.name + "-*")]:
            restore[path] = path.stat().st_mode
            path.chmod(path.stat().st_mode | 0o007 if path == db.parent else 0o666)
    try:
        yield data_dir
    finally:
        for path, mode in restore.items():
            if path.exists():
                path.chmod(mode)
        shutil.rmtree(data_dir, ignore_errors=True)


def worker_env(lab: Lab, data_dir: Path) -> dict[str, str]:
    return {
        "PORTMON_MASSCAN_ADAPTER": lab.interface,
        "PORTMON_MASSCAN_ADAPTER_IP": lab.source_ip,
        "PORTMON_MASSCAN_ROUTER_MAC": lab.router_mac,
        "PORTMON_DATA_DIR": str(data_dir),
        "SECRET_KEY": "sweep-privileges-test",
        "HOME": str(data_dir),
        # The missing capability does not come back on a retry: fail the shard at once.
        "PORTMON_SHARD_MAX_ATTEMPTS": "1",
    }


def lab_ports(lab: Lab) -> str:
    """1-1000 plus each open lab port: a full range would only make the test slower."""
    return ",".join(["1-1000", *sorted({str(port) for _ip, port in lab.open_ports})])


def found(run) -> set[tuple[str, int]]:
    return set(PortObservation.objects.filter(run=run).values_list("host__ip", "port"))


def worker_status(proc: subprocess.Popen) -> dict[str, str]:
    lines = Path(f"/proc/{proc.pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


@pytest.mark.lab
@pytest.mark.celery
def test_it_sweeps_the_lab_with_masscan_as_nobody_with_cap_net_raw(celery_workers):
    with Lab(hosts=3, ports_per_host=(2, 3), seed=11) as lab, writable_by_nobody() as data:
        call_command("scope", "add", lab.cidr, "--zone", "internal")
        worker = celery_workers.start(
            "sweep",
            "sweep.internal",
            extra_env=worker_env(lab, data),
            as_user=as_nobody("+net_raw", celery_workers.tmp_path / "stage"),
        )
        status = worker_status(worker)
        assert status["Uid"].split()[0] == str(NOBODY)
        assert privileges.has_capability("CAP_NET_RAW", privileges.parse_effective(
            "CapEff:\t" + status["CapEff"]))  # fmt: skip

        run = run_start(
            targets=lab.hosts,
            ports=lab_ports(lab),
            rate=20_000,
            engine="masscan",
            fingerprint=False,
        )
        run = wait_run(run.pk, 180)

        assert run.state == RunState.FINISHED and not run.degraded, run.error
        assert found(run) == lab.open_ports
        assert "masscan took" in celery_workers.log("sweep")


@pytest.mark.lab
@pytest.mark.celery
def test_it_fails_masscan_shards_clearly_without_the_capability_and_connect_still_works(
    celery_workers,
):
    with Lab(hosts=3, ports_per_host=(2, 3), seed=12) as lab, writable_by_nobody() as data:
        call_command("scope", "add", lab.cidr, "--zone", "internal")
        celery_workers.start(
            "sweep",
            "sweep.internal",
            extra_env=worker_env(lab, data),
            as_user=as_nobody("-all", celery_workers.tmp_path / "stage"),
        )
        ports = lab_ports(lab)

        refused = wait_run(
            run_start(
                targets=lab.hosts, ports=ports, rate=20_000, engine="masscan", fingerprint=False
            ).pk,
            120,
        )
        connected = wait_run(
            run_start(targets=lab.hosts, ports=ports, engine="connect", fingerprint=False).pk, 180
        )
        auto = wait_run(
            run_start(targets=lab.hosts, ports=ports, engine="auto", fingerprint=False).pk, 180
        )

    shard = ScanShard.objects.get(run=refused)
    assert shard.state == ShardState.FAILED
    assert shard.error == privileges.NEEDS_NET_RAW
    assert refused.degraded
    assert found(refused) == set()
    for run in (connected, auto):  # auto falls back to the connect scanner on this worker
        assert run.state == RunState.FINISHED and not run.degraded, run.error
        assert found(run) == lab.open_ports
