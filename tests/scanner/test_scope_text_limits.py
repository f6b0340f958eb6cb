"""Over-long scope text is one line on every database (MariaDB raised a DataError)."""

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from scanner.models import Exclusion, Network


@pytest.mark.django_db
@pytest.mark.parametrize(
    "args, field",
    [
        (["add", "198.18.0.0/16", "--zone", "internal", "--description", "d" * 201], "description"),
        (
            ["add", "198.18.0.0/16", "--zone", "internal", "--owner", "o" * 250 + "@x.example"],
            "owner",
        ),
        (["exclude", "198.18.9.0/24", "--reason", "r" * 201], "reason"),
    ],
)
def test_it_refuses_text_longer_than_the_field(args, field):
    if args[0] == "exclude":
        call_command("scope", "add", "198.18.0.0/16", "--zone", "internal")
    with pytest.raises(CommandError) as exc:
        call_command("scope", *args)
    message = str(exc.value)
    assert field in message and "characters" in message and "\n" not in message
    assert not Exclusion.objects.exists()
    assert Network.objects.count() == (1 if args[0] == "exclude" else 0)


@pytest.mark.django_db
def test_it_accepts_text_exactly_at_the_limit():
    call_command("scope", "add", "198.18.0.0/16", "--zone", "internal", "--description", "d" * 200)
    call_command("scope", "exclude", "198.18.9.0/24", "--reason", "é" * 200)
    assert Exclusion.objects.get().reason == "é" * 200
