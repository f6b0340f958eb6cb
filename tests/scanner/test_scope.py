"""Scope: the scope command with good and bad input, and the pure scope/target logic."""

import ipaddress
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from scanner.models import Exclusion, Network
from scanner.scope import Scope, ScopeError, parse_cidr


def scope(*args):
    out = StringIO()
    call_command("scope", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_it_adds_lists_and_excludes():
    assert "added 198.18.0.0/16 (internal)" in scope(
        "add", "198.18.0.0/16", "--zone", "internal", "--owner", "neteng@example.com"
    )
    assert "excluded 198.18.9.0/24 from 198.18.0.0/16" in scope(
        "exclude", "198.18.9.0/24", "--reason", "printers"
    )
    listing = scope("list")
    assert "198.18.0.0/16" in listing and "neteng@example.com" in listing
    assert "excluding 198.18.9.0/24  (printers)" in listing


@pytest.mark.django_db
@pytest.mark.parametrize(
    "args, message",
    [
        (["add", "198.18.0.300/24", "--zone", "internal"], "is not a CIDR"),
        (["add", "198.18.0.1/24", "--zone", "internal"], "did you mean 198.18.0.0/24"),
        (["add", "--zone", "internal", "--", "-oN/tmp/x"], "is not a CIDR"),
        (["add", "224.0.0.0/8", "--zone", "internal"], "reserved range"),
        (["add", "0.0.0.0/0", "--zone", "external"], "reserved range"),
        (["add", "ff02::/16", "--zone", "internal"], "reserved range"),
        (["add", "198.18.0.0/24", "--zone", "internal", "--owner", "not-mail"], "not an email"),
        (["exclude", "198.19.0.0/24"], "not inside any network"),
        (["remove", "198.19.0.0/24"], "not in scope"),
    ],
)
def test_it_rejects_bad_input_with_one_line_and_writes_nothing(args, message):
    with pytest.raises(CommandError) as exc:
        scope(*args)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)
    assert Network.objects.count() == 0 and Exclusion.objects.count() == 0


@pytest.mark.django_db
def test_it_refuses_overlapping_networks_and_exclusions():
    scope("add", "198.18.0.0/16", "--zone", "internal")
    with pytest.raises(CommandError, match="overlaps network 198.18.0.0/16"):
        scope("add", "198.18.4.0/24", "--zone", "external")
    scope("exclude", "198.18.9.0/24")
    with pytest.raises(CommandError, match="overlaps exclusion 198.18.9.0/24"):
        scope("exclude", "198.18.9.128/25")
    assert Network.objects.count() == 1 and Exclusion.objects.count() == 1


@pytest.mark.django_db
def test_it_removes_a_network_with_its_exclusions():
    scope("add", "198.18.0.0/16", "--zone", "internal")
    scope("exclude", "198.18.9.0/24")
    assert "removed" in scope("remove", "198.18.0.0/16")
    assert not Network.objects.exists() and not Exclusion.objects.exists()


@pytest.mark.process
def test_it_exits_non_zero_from_the_shell(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PORTMON_DATA_DIR": str(tmp_path)}
    env.pop("DATABASE_URL", None)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], env=env, check=True)
    out = subprocess.run(
        [sys.executable, "manage.py", "scope", "add", "10.0.0.1/8", "--zone", "internal"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1
    assert (
        out.stderr.strip()
        == "CommandError: '10.0.0.1/8' has host bits set; did you mean 10.0.0.0/8?"
    )


def test_it_allows_only_addresses_inside_networks_and_outside_exclusions():
    s = Scope.from_cidrs({"198.18.0.0/24": "internal", "::1/128": "internal"}, ["198.18.0.128/25"])
    assert s.allows(ipaddress.ip_address("198.18.0.5"))
    assert not s.allows(ipaddress.ip_address("198.18.0.200"))
    assert not s.allows(ipaddress.ip_address("198.19.0.5"))
    assert s.allows(ipaddress.ip_address("::1"))


def test_it_normalises_ipv6_and_rejects_link_local():
    assert str(parse_cidr("2001:DB8::/32")) == "2001:db8::/32"
    with pytest.raises(ScopeError, match="reserved"):
        parse_cidr("fe80::/64")
