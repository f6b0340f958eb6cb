"""Reads: token lookup, inventory, and the cross-check of agent reports with scans."""

import hmac

from agents.models import Agent
from agents.services.enrollment import token_hash

# Compared against when the key id is unknown, so that a miss costs the same as a hit.
_DUMMY_HASH = token_hash("not a token")


def agent_for_token(token: str) -> Agent | None:
    """The enabled agent the token belongs to, or None (unknown, wrong or revoked)."""
    key_id, _, secret = token.partition(".")
    agent = None
    if key_id and secret and len(token) <= 200:
        agent = Agent.objects.filter(key_id=key_id).first()
    expected = agent.token_hash if agent else _DUMMY_HASH
    ok = hmac.compare_digest(expected, token_hash(secret))
    if agent is None or not ok or not agent.enabled:
        return None
    return agent
