"""Agent fixtures: an enrolled agent on loopback addresses and a way to post reports."""

import json
import uuid
from datetime import UTC, datetime

import pytest

from agents.services.enrollment import agent_add

URL = "/api/agents/report"
IP = "127.0.0.5"


class Poster:
    """Posts reports for one agent through Django's test client (the whole view path)."""

    def __init__(self, client, token: str) -> None:
        self.client = client
        self.token = token
        self.seq = 0

    def report(self, *sockets: dict, **fields) -> dict:
        self.seq += 1
        return {
            "report_id": str(uuid.uuid4()),
            "seq": self.seq,
            "collected_at": datetime.now(UTC).isoformat(),
            "sockets": list(sockets),
            **fields,
        }

    def post(self, report=None, *, raw: bytes | None = None, token: str | None = None, **kw):
        data = raw if raw is not None else json.dumps(report).encode()
        token = self.token if token is None else token
        return self.client.generic(
            "POST",
            URL,
            data,
            content_type=kw.pop("content_type", "application/json"),
            HTTP_AUTHORIZATION=f"Bearer {token}",
            **kw,
        )

    def send(self, *sockets: dict, **fields):
        return self.post(self.report(*sockets, **fields))


def sock(port: int, name: str = "nc", exe: str = "/usr/bin/nc", **kw) -> dict:
    return {"proto": "tcp", "address": IP, "port": port, "name": name, "exe": exe, **kw}


@pytest.fixture(autouse=True)
def no_rate_limit(settings):
    # The limit has its own test; the others post more than 30 reports a minute.
    settings.PORTMON_AGENT_RATE = 0


@pytest.fixture
def enrolled(db):
    return agent_add(name="web1", ips=[IP])


@pytest.fixture
def poster(client, enrolled) -> Poster:
    return Poster(client, enrolled.token)
