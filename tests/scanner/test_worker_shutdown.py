"""Stopping a worker as systemd does (SIGTERM, then SIGKILL after TimeoutStopSec)."""

import time

import pytest
from django.core.management import call_command

from scanner.models import PortObservation, RunState, ScanShard, ShardState
from scanner.services.runs import run_start
from tests.scanner.test_pipeline import Listeners, answers_everywhere, free_ports, wait_run


@pytest.mark.celery
def test_it_finishes_the_shard_in_hand_when_stopped_mid_sweep_and_exits_0(celery_workers):
    """`systemctl stop portmon-sweep@...` during a sweep: the warm shutdown completes the
    shard (no redelivery, no second attempt) and the worker exits 0 well within the unit's
    TimeoutStopSec (60 s), so systemd never needs its SIGKILL."""
    call_command("scope", "add", "127.0.0.0/8", "--zone", "internal")
    hosts = ["127.0.0.120", "127.0.0.121"]
    specs = [(ip, p, b"") for ip in hosts for p in free_ports(1, ip)]
    # 2 x 30,001 probes: ~8 s of sweep (progress is written every 2 s), stopped in the middle.
    ports = ",".join(["1-30000", *(str(p) for _, p, _ in specs)])
    celery_workers.start("sweep", "sweep.internal")
    with Listeners(specs):
        run = run_start(targets="127.0.0.120/31", ports=ports, engine="connect", fingerprint=False)
        shard = ScanShard.objects.filter(run=run)
        deadline = time.monotonic() + 60
        while not shard.filter(state=ShardState.RUNNING, probes_done__gt=0).exists():
            assert time.monotonic() < deadline, "the shard never started"
            time.sleep(0.05)
        assert shard.get().state == ShardState.RUNNING  # stopped in the middle, not after
        stopping = time.monotonic()
        code = celery_workers.stop("sweep", grace=60)
        took = time.monotonic() - stopping
        run = wait_run(run.pk, 10)  # the worker is gone: whatever is done was done by it
    assert code == 0, f"worker killed or failed ({code}):\n{celery_workers.log('sweep')[-3000:]}"
    assert "Warm shutdown" in celery_workers.log("sweep")
    assert run.state == RunState.FINISHED and not run.degraded, run.error
    found = set(PortObservation.objects.filter(run=run).values_list("host__ip", "port"))
    assert {r for r in found if not answers_everywhere(r[1])} == {(ip, p) for ip, p, _ in specs}
    assert shard.get().attempts == 1
    assert took < 60


@pytest.mark.celery
def test_an_idle_worker_stops_at_once_on_sigterm(celery_workers):
    celery_workers.start("worker", "default,fingerprint", concurrency=2)
    stopping = time.monotonic()
    assert celery_workers.stop("worker", grace=30) == 0, celery_workers.log("worker")[-3000:]
    assert time.monotonic() - stopping < 10
