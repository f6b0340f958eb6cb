"""Routes checked at plan time and between a shard's attempts, against a real kernel.

The `ip` commands of scanner.engines.routes run inside a test namespace (two veths, a
blackhole); nothing is sent: a refused or changed route stops the shard before masscan.
"""

import subprocess

import pytest
from django.core.management import call_command

from scanner import sweep
from scanner.engines import routes
from scanner.models import ScanShard, ShardState
from scanner.services.runs import RunError, run_start
from scanner.tasks import sweep_shard
from tests.scanner.test_routes_netns import ip, netns

pytestmark = pytest.mark.lab
__all__ = ["netns"]  # the namespace fixture, used below


@pytest.fixture
def in_netns(netns, monkeypatch, transactional_db):
    """routes' `ip` calls run in the namespace; scope covers its networks."""
    namespace, _macs = netns
    real = routes.run_process

    def run_in_namespace(argv, **kwargs):
        assert argv[0] == "ip"
        return real(["ip", "netns", "exec", namespace, *argv], **kwargs)

    monkeypatch.setattr(routes, "run_process", run_in_namespace)
    # The resolver's ARP probe is a socket of this process (root namespace): the gateways'
    # neighbour entries are written instead.
    for dev, gateway in (("a0", "198.18.240.2"), ("b0", "198.19.240.2")):
        ip("-n", namespace, "neigh", "replace", gateway, "lladdr", _macs[dev], "dev", dev)
    call_command("scope", "add", "198.18.240.0/21", "--zone", "internal")
    return namespace


def test_it_refuses_a_masscan_run_to_a_blackholed_network_when_it_is_planned(
    in_netns, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as queued:
        with pytest.raises(RunError, match=r"^198.18.243.0/24: its route is blackhole; refusing"):
            run_start(targets="198.18.243.0/24", ports="22", engine="masscan")
        with pytest.raises(RunError, match=r"^198.18.244.9: its route is unreachable; refusing"):
            run_start(targets="198.18.244.9", ports="22", engine="masscan")
    assert queued == []


def test_it_fails_a_retry_whose_route_changed_since_the_first_attempt(
    in_netns, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        run = run_start(targets="198.18.241.0/24", ports="22", engine="masscan")
    shard = ScanShard.objects.select_related("run").get(run=run)
    # The first attempt's plan (what its masscan swept by) is kept on the shard.
    sweep.shard_routes_plan(shard=shard, targets=["198.18.241.0/24"])
    shard.refresh_from_db()
    assert shard.route_plan["masscan"][0]["interface"] == "a0"

    ip("-n", in_netns, "route", "replace", "198.18.241.0/24", "via", "198.19.240.2", "dev", "b0")
    try:
        sweep_shard.apply(args=[shard.pk])
    finally:
        ip("-n", in_netns, "route", "replace", "198.18.241.0/24", "via", "198.18.240.2")

    shard.refresh_from_db()
    run.refresh_from_db()
    assert shard.state == ShardState.FAILED and shard.attempts == 1
    assert shard.error == (
        "route to 198.18.241.0/24 changed since the first attempt: "
        "a0 via 198.18.240.2 -> b0 via 198.19.240.2"
    )
    assert run.degraded and "changed since the first attempt" in run.error
    masscans = subprocess.run(["pgrep", "-af", "masscan"], capture_output=True, text=True)
    assert "198.18.241" not in masscans.stdout
