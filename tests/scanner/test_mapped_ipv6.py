"""IPv4-mapped IPv6 is IPv4 everywhere; ranges that embed IPv4 addresses stay out of scope."""

import ipaddress

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from scanner.findings import Finding
from scanner.models import Host, Network, PortObservation, ScanRun
from scanner.scope import Scope, ScopeError, parse_cidr
from scanner.services.results import hosts_ensure, observations_record
from scanner.targets import guard, parse_targets


def scope(*args):
    call_command("scope", *args)


@pytest.fixture
def engine_calls(monkeypatch):
    from scanner.engines import connect

    calls = []
    monkeypatch.setattr(connect, "sweep", lambda options, events=None: calls.append(options) or [])
    return calls


@pytest.mark.django_db
def test_it_refuses_the_reported_bypass_at_plan_time(engine_calls):
    scope("add", "127.0.0.0/8", "--zone", "internal")
    scope("exclude", "127.0.0.2/32", "--reason", "fragile")
    # The mapped network is 127.0.0.0/8 itself: it is refused as already in scope.
    with pytest.raises(CommandError, match="^127.0.0.0/8 overlaps network 127.0.0.0/8"):
        scope("add", "::ffff:127.0.0.0/104", "--zone", "internal")
    # --timeout: on the old code the run was planned and waited for a worker.
    with pytest.raises(CommandError) as exc:
        call_command("scan", "::ffff:127.0.0.2", "--engine", "connect", "--timeout", "1")
    assert str(exc.value) == "127.0.0.2/32 is excluded from scanning by 127.0.0.2/32"
    assert not ScanRun.objects.exists() and engine_calls == []
    assert list(Network.objects.values_list("cidr", flat=True)) == ["127.0.0.0/8"]


@pytest.mark.django_db
def test_it_stores_a_mapped_scope_as_ipv4_so_ipv4_exclusions_apply():
    scope("add", "::ffff:198.18.0.0/112", "--zone", "internal")
    scope("exclude", "::ffff:198.18.0.8/125")
    assert list(Network.objects.values_list("cidr", flat=True)) == ["198.18.0.0/16"]
    with pytest.raises(CommandError, match="198.18.0.9/32 is excluded"):
        call_command("scan", "198.18.0.9", "--timeout", "1")
    with pytest.raises(CommandError, match="198.18.0.9/32 is excluded"):
        call_command("scan", "::ffff:c612:9", "--timeout", "1")
    assert not ScanRun.objects.exists()


@pytest.mark.parametrize(
    "cidr, kind",
    [
        ("64:ff9b::/96", "NAT64"),
        ("64:ff9b::7f00:0/104", "NAT64"),
        ("64:ff9b:1::/48", "NAT64"),
        ("2002::/16", "6to4"),
        ("2002:7f00::/24", "6to4"),
        ("2001::/32", "Teredo"),
        ("2000::/3", "6to4"),  # contains 6to4 and Teredo
        ("::fffe:0:0/95", "IPv4-mapped"),  # half of it is IPv4-mapped
    ],
)
def test_it_refuses_ranges_that_embed_ipv4_addresses(cidr, kind):
    with pytest.raises(ScopeError) as exc:
        parse_cidr(cidr)
    assert kind in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.django_db
def test_it_refuses_embedding_ranges_from_the_command_and_writes_nothing():
    with pytest.raises(CommandError, match="6to4"):
        scope("add", "2002::/16", "--zone", "external")
    assert not Network.objects.exists()


def test_it_keeps_ordinary_ipv6_and_suggests_the_ipv4_network_for_host_bits():
    assert str(parse_cidr("2001:db8::/32")) == "2001:db8::/32"
    assert str(parse_cidr("::1")) == "::1/128"
    assert str(parse_cidr("::ffff:127.0.0.0/104")) == "127.0.0.0/8"
    with pytest.raises(ScopeError, match=r"did you mean 127\.0\.0\.0/8\?"):
        parse_cidr("::ffff:127.0.0.1/104")


def test_it_applies_ipv4_exclusions_to_mapped_addresses_and_stored_mapped_rows():
    s = Scope.from_cidrs({"127.0.0.0/8": "internal"}, ["127.0.0.2/32"])
    assert not s.allows(ipaddress.ip_address("::ffff:127.0.0.2"))
    assert s.allows(ipaddress.ip_address("::ffff:127.0.0.3"))
    # A row written before normalisation still guards the IPv4 addresses it meant.
    legacy = Scope.from_cidrs({"::ffff:7f00:0/104": "internal"}, ["::ffff:7f00:2/128"])
    assert not legacy.allows(ipaddress.ip_address("127.0.0.2"))
    assert legacy.allows(ipaddress.ip_address("127.0.0.3"))
    with pytest.raises(ScopeError, match="excluded"):
        guard(parse_targets("127.0.0.2"), legacy)


def test_it_resolves_names_to_ipv4_when_the_resolver_answers_mapped():
    nets = parse_targets("db.lab", resolver=lambda name: ["::ffff:127.0.0.7"])
    assert nets == [ipaddress.ip_network("127.0.0.7/32")]


@pytest.mark.parametrize("target", ["64:ff9b::7f00:2", "2002:7f00:2::1", "2001:0:7f00:2::"])
def test_it_refuses_targets_that_embed_ipv4_addresses(target):
    with pytest.raises(ScopeError, match="embed IPv4"):
        parse_targets(target, resolver=lambda name: pytest.fail("resolved"))


def test_it_writes_findings_with_the_ipv4_form():
    assert Finding("::ffff:127.0.0.2", 22) == Finding("127.0.0.2", 22)
    assert Finding("2001:DB8:0::1", 22).ip == "2001:db8::1"


@pytest.mark.django_db
def test_it_records_a_mapped_finding_on_the_ipv4_host():
    scope("add", "127.0.0.0/8", "--zone", "internal")
    run = ScanRun.objects.create(targets="127.0.0.2")
    now = timezone.now()
    # Old code: KeyError (the host row reads back as '::ffff:127.0.0.2', looked up as
    # '::ffff:7f00:2'), and the run stayed 'sweeping'.
    recorded = observations_record(
        run_id=run.pk,
        findings=[Finding("::ffff:7f00:2", 22), Finding("127.0.0.2", 80)],
        seen_at=now,
    )
    assert recorded == 2
    (host,) = Host.objects.all()
    assert host.ip == "127.0.0.2" and host.network.cidr == "127.0.0.0/8"
    assert sorted(PortObservation.objects.values_list("port", flat=True)) == [22, 80]
    assert list(hosts_ensure(ips=["::ffff:127.0.0.2"], seen_at=now)) == ["127.0.0.2"]
