"""Out-of-scope and malformed targets never reach an engine, not even in the worker."""

import ipaddress

import pytest
from django.core.management import call_command

from scanner import sweep
from scanner.models import ScanShard
from scanner.services import runs, shards
from scanner.targets import TargetError


@pytest.fixture
def engine_calls(monkeypatch):
    from scanner.engines import connect

    calls = []
    monkeypatch.setattr(connect, "sweep", lambda options, events=None: calls.append(options) or [])
    return calls


def test_it_checks_scope_again_in_the_worker(db, engine_calls, django_capture_on_commit_callbacks):
    call_command("scope", "add", "127.0.0.0/8", "--zone", "internal")
    with django_capture_on_commit_callbacks(execute=False):
        run = runs.run_start(targets="127.0.0.2", ports="22", engine="connect")
    # Scope changes between planning and the worker picking the shard up.
    call_command("scope", "remove", "127.0.0.0/8")
    shard = shards.shard_claim(shard_id=ScanShard.objects.get(run=run).pk, worker="w", token="t")
    with pytest.raises(TargetError, match="outside the configured scope"):
        sweep.shard_sweep(shard=shard)
    assert engine_calls == []


def test_it_hands_engines_only_parsed_addresses(
    db, engine_calls, django_capture_on_commit_callbacks
):
    call_command("scope", "add", "127.0.0.0/8", "--zone", "internal")
    call_command("scope", "exclude", "127.0.0.4/30")
    with django_capture_on_commit_callbacks(execute=False):
        run = runs.run_start(targets="127.0.0.0/29", ports="22,80", engine="connect")
    shard = shards.shard_claim(shard_id=ScanShard.objects.get(run=run).pk, worker="w", token="t")
    sweep.shard_sweep(shard=shard)
    (options,) = engine_calls
    assert all(isinstance(t, ipaddress.IPv4Network) for t in options.targets)
    probed = [str(a) for t in options.probe_targets() for a in ipaddress.ip_network(t)]
    assert probed == [f"127.0.0.{i}" for i in range(4)]
    assert options.ports == ((22, 22), (80, 80))


@pytest.mark.parametrize("bad", ["127.0.0.1,--script,x", "-oN/tmp/x", ";id", "localhost;id"])
def test_it_refuses_injection_targets_before_creating_anything(db, bad):
    call_command("scope", "add", "127.0.0.0/8", "--zone", "internal")
    with pytest.raises(TargetError):
        runs.run_start(targets=bad, ports="22")
    assert not ScanShard.objects.exists()
