"""Enrolment: agents, their addresses and their tokens (shown once, stored hashed)."""

import hashlib
import ipaddress
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils import timezone

from agents.models import Agent, AgentHost
from scanner.services.results import host_ip, hosts_ensure


class EnrollmentError(ValueError):
    """Refused enrolment input; the message is meant for the user."""


@dataclass(frozen=True)
class IssuedToken:
    agent_id: int
    name: str
    token: str  # the only time the secret exists outside the agent's token file


def token_hash(secret: str) -> str:
    # The secret is 256 random bits: a plain SHA-256 cannot be brute-forced, and a slow
    # password hash would cost every report tens of milliseconds.
    return hashlib.sha256(secret.encode()).hexdigest()


def _new_token() -> tuple[str, str, str]:
    """(key id, secret, token): the key id finds the row, the secret proves the agent."""
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return key_id, secret, f"{key_id}.{secret}"


def _addresses(ips: Iterable[str]) -> list[str]:
    out = []
    for ip in ips:
        try:
            address = ipaddress.ip_address(ip.strip())
        except ValueError:
            raise EnrollmentError(f"{ip!r} is not an IP address") from None
        if address.is_unspecified or address.is_multicast:
            raise EnrollmentError(f"{ip} cannot be a host's address")
        text = host_ip(str(address))
        if text not in out:
            out.append(text)
    if not out:
        raise EnrollmentError("an agent needs at least one --host address")
    return out


def agent_add(*, name: str, ips: Iterable[str]) -> IssuedToken:
    """A new agent for the host(s) at `ips` (its IPv4 and IPv6 addresses)."""
    name = name.strip()
    if not name or len(name) > 100:
        raise EnrollmentError("an agent name is 1-100 characters")
    addresses = _addresses(ips)
    key_id, secret, token = _new_token()
    now = timezone.now()
    with transaction.atomic():
        if Agent.objects.filter(name=name).exists():
            raise EnrollmentError(f"agent {name!r} exists (rotate its token instead)")
        hosts = hosts_ensure(ips=addresses, seen_at=now)
        taken = AgentHost.objects.filter(host__ip__in=addresses).select_related("agent", "host")
        for link in taken:
            raise EnrollmentError(f"{link.host.ip} already belongs to agent {link.agent.name!r}")
        try:
            agent = Agent.objects.create(
                name=name, key_id=key_id, token_hash=token_hash(secret), created_at=now
            )
        except IntegrityError:
            raise EnrollmentError(f"agent {name!r} exists (rotate its token instead)") from None
        AgentHost.objects.bulk_create([AgentHost(agent=agent, host=hosts[ip]) for ip in addresses])
    return IssuedToken(agent_id=agent.pk, name=agent.name, token=token)


def agent_rotate(*, agent_id: int) -> IssuedToken:
    """A new token; the old one stops working at once. A revoked agent is enabled again."""
    key_id, secret, token = _new_token()
    with transaction.atomic():
        agent = Agent.objects.select_for_update().get(pk=agent_id)
        agent.key_id = key_id
        agent.token_hash = token_hash(secret)
        agent.enabled = True
        agent.revoked_at = None
        agent.rotated_at = timezone.now()
        agent.save(update_fields=["key_id", "token_hash", "enabled", "revoked_at", "rotated_at"])
    return IssuedToken(agent_id=agent.pk, name=agent.name, token=token)


def agent_revoke(*, agent_id: int) -> bool:
    """The agent's token stops working; its inventory and history stay. False: already."""
    return bool(
        Agent.objects.filter(pk=agent_id, enabled=True).update(
            enabled=False, revoked_at=timezone.now()
        )
    )
