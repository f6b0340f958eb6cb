"""manage.py agent add|revoke|rotate|list: tokens shown once, stored hashed."""

import subprocess
import sys

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from agents.models import Agent
from agents.selectors import agent_for_token
from tests.conftest import ROOT


def run(*args) -> str:
    from io import StringIO

    out = StringIO()
    call_command("agent", *args, stdout=out, stderr=StringIO())
    return out.getvalue().strip()


def test_it_adds_an_agent_for_its_addresses_and_stores_only_a_hash(db):
    token = run("add", "web1", "--host", "198.18.0.20", "--host", "::ffff:198.18.0.21")

    agent = Agent.objects.get(name="web1")
    assert token.split(".")[1] not in agent.token_hash and token not in agent.token_hash
    assert sorted(link.host.ip for link in agent.addresses.all()) == [
        "198.18.0.20",
        "198.18.0.21",
    ]
    assert agent_for_token(token).name == "web1"
    assert run("list").startswith("web1\t198.18.0.20,198.18.0.21\tenabled\tlast report never")


def test_it_rotates_and_revokes_tokens(db):
    old = run("add", "web1", "--host", "198.18.0.20")

    new = run("rotate", "web1")
    assert agent_for_token(old) is None and agent_for_token(new).name == "web1"
    assert run("revoke", "web1") == "web1: revoked"
    assert agent_for_token(new) is None


@pytest.mark.parametrize(
    "args, message",
    [
        (("add", "web2", "--host", "not-an-ip"), "is not an IP address"),
        (("add", "web2", "--host", "198.18.0.20"), "already belongs to agent 'web1'"),
        (("add", "web1", "--host", "198.18.0.30"), "exists"),
        (("revoke", "nobody"), "no agent named 'nobody'"),
    ],
)
def test_it_refuses_bad_input_with_a_one_line_error(db, args, message):
    run("add", "web1", "--host", "198.18.0.20")

    with pytest.raises(CommandError, match=message):
        run(*args)
    assert Agent.objects.count() == 1


@pytest.mark.process
def test_it_exits_1_on_a_wrong_option_from_the_command_line():
    result = subprocess.run(
        [sys.executable, "manage.py", "agent", "frobnicate"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert result.returncode == 1 and "invalid choice" in result.stderr
