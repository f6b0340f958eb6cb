"""POST /api/agents/report: auth, strict input, replay protection, inventory, events."""

import io
import json
import random
from datetime import UTC, datetime, timedelta

import pytest

from agents.models import AgentReport, ProcessSocket, SocketChange
from agents.schema import SchemaError, report_parse
from agents.services.enrollment import agent_add, agent_revoke, agent_rotate
from agents.throttle import WINDOW, rate_reset
from alerts.models import AlertEvent, EventState, Rule
from alerts.services.events import event_transition, events_reopen_seen
from scanner.models import Host, PortObservation, ScanRun
from tests.agents.conftest import IP, URL, sock


def rows_written() -> tuple[int, int, int, int]:
    return (
        AgentReport.objects.count(),
        ProcessSocket.objects.count(),
        SocketChange.objects.count(),
        AlertEvent.objects.count(),
    )


def test_it_records_a_report_and_raises_new_process_events(poster):
    response = poster.send(sock(8080, pid=10, cmdline="nc -l 8080"), sock(22, "sshd", "/sbin/sshd"))

    assert response.status_code == 200 and response.json() == {"status": "accepted", "events": 2}
    event = AlertEvent.objects.get(port=8080)
    assert (event.kind, event.host.ip, event.state) == ("new_process", IP, "new")
    assert event.detail["process"] == "nc" and event.detail["exe"] == "/usr/bin/nc"
    assert event.detail["cmdline"] == "nc -l 8080"
    row = ProcessSocket.objects.get(port=8080)
    assert (row.name, row.exe, row.pid, row.gone_at) == ("nc", "/usr/bin/nc", 10, None)


def test_it_answers_401_to_a_wrong_missing_revoked_or_rotated_token(poster, enrolled):
    report = poster.report(sock(8080))
    key_id = enrolled.token.split(".")[0]

    assert poster.post(report, token="nonsense").status_code == 401
    assert poster.post(report, token=f"{key_id}.wrong-secret").status_code == 401
    assert poster.client.post(URL, b"{}", content_type="application/json").status_code == 401
    agent_revoke(agent_id=enrolled.agent_id)
    assert poster.post(report).status_code == 401
    rotated = agent_rotate(agent_id=enrolled.agent_id)
    assert poster.post(report).status_code == 401  # the old token is gone
    assert poster.post(report, token=rotated.token).status_code == 200


def test_it_refuses_sockets_on_another_hosts_address_with_403(poster):
    agent_add(name="db1", ips=["198.18.0.7"])

    response = poster.send(sock(22), sock(3306, address="198.18.0.7"))

    assert response.status_code == 403 and response.json()["field"] == "sockets[1].address"
    assert rows_written() == (0, 0, 0, 0)


def test_it_accepts_wildcard_and_loopback_sockets(poster):
    response = poster.send(sock(53, address="0.0.0.0"), sock(631, address="::1"))

    assert response.status_code == 200
    assert sorted(ProcessSocket.objects.values_list("port", "addresses")) == [
        (53, ["0.0.0.0"]),
        (631, ["::1"]),
    ]


def test_it_answers_413_from_the_length_before_reading_and_for_a_long_chunked_body(
    poster, settings
):
    settings.PORTMON_AGENT_MAX_BODY = 2000
    big = poster.report(*[sock(p) for p in range(1, 200)])

    assert poster.post(big).status_code == 413
    # No Content-Length (chunked, de-chunked by gunicorn): read one byte past the limit.
    chunked = poster.post(big, **chunked_environ(json.dumps(big).encode()))
    assert chunked.status_code == 413
    assert rows_written() == (0, 0, 0, 0)


def chunked_environ(body: bytes) -> dict:
    """What gunicorn hands Django for a chunked request: no length, an input that ends."""
    return {"CONTENT_LENGTH": "", "wsgi.input": io.BytesIO(body), "wsgi.input_terminated": True}


def test_it_reads_a_chunked_report_up_to_the_limit(poster):
    report = poster.report(sock(8080))

    response = poster.post(report, **chunked_environ(json.dumps(report).encode()))

    assert response.status_code == 200 and response.json()["status"] == "accepted"
    assert AgentReport.objects.get().report_id == report["report_id"]


def test_it_treats_a_known_report_id_as_a_duplicate_whatever_its_seq(poster):
    report = poster.report(sock(8080))
    assert poster.post(report).status_code == 200
    before = rows_written()

    again = poster.post({**report, "seq": report["seq"] + 5, "sockets": [sock(9999)]})

    assert again.status_code == 200 and again.json() == {"status": "duplicate"}
    assert rows_written() == before
    # Nothing of the duplicate stayed: the agent's sequence did not jump to its seq.
    assert poster.post({**poster.report(sock(9090)), "seq": report["seq"] + 1}).status_code == 200


def test_it_names_the_bad_field_in_a_400(poster):
    response = poster.send(sock(70000))

    assert response.status_code == 400
    assert response.json() == {"error": "must be 1-65535", "field": "sockets[0].port"}


def test_it_treats_a_replayed_report_as_a_no_op_and_refuses_an_old_sequence(poster):
    report = poster.report(sock(8080))
    assert poster.post(report).status_code == 200
    before = rows_written()

    again = poster.post(report)

    assert again.status_code == 200 and again.json() == {"status": "duplicate"}
    assert rows_written() == before
    older = {**poster.report(sock(9090)), "seq": report["seq"]}
    stale = poster.post(older)
    assert stale.status_code == 409 and stale.json()["field"] == "seq"
    assert rows_written() == before


def test_it_refuses_reports_outside_the_time_window(poster):
    now = datetime.now(UTC)
    future = poster.post(
        poster.report(sock(1), collected_at=(now + timedelta(hours=1)).isoformat())
    )
    ancient = poster.post(
        poster.report(sock(1), collected_at=(now - timedelta(days=8)).isoformat())
    )

    assert (future.status_code, ancient.status_code) == (409, 409)
    assert rows_written() == (0, 0, 0, 0)


def test_it_rate_limits_each_agent_on_the_shared_cache(poster, enrolled, settings):
    settings.PORTMON_AGENT_RATE = 3
    other = agent_add(name="web2", ips=["127.0.0.6"])
    window = int(datetime.now(UTC).timestamp()) // WINDOW
    for agent_id in (enrolled.agent_id, other.agent_id):
        for i in (0, 1):
            rate_reset(agent_id=agent_id, window=window + i)

    codes = [poster.send(sock(8080)).status_code for _ in range(5)]
    limited = poster.send(sock(8080))
    other_agent = poster.post(poster.report(sock(1, address="127.0.0.6")), token=other.token)

    if int(datetime.now(UTC).timestamp()) // WINDOW != window:
        pytest.skip("the rate window rolled over during the test")
    assert codes == [200, 200, 200, 429, 429]
    assert 1 <= int(limited["Retry-After"]) <= WINDOW
    assert other_agent.status_code == 200  # counted per agent


def test_it_keeps_owner_history_and_raises_process_changed_but_not_for_a_restart(poster):
    poster.send(sock(8080, pid=10))
    poster.send(sock(8080, pid=11))  # restart: same name and exe
    assert AlertEvent.objects.filter(kind="process_changed").count() == 0
    assert ProcessSocket.objects.get(port=8080).pid == 11

    response = poster.send(sock(8080, "python3", "/usr/bin/python3", pid=12))

    assert response.json()["events"] == 1
    changed = AlertEvent.objects.get(kind="process_changed")
    assert changed.detail["process"] == "python3" and changed.detail["previous_process"] == "nc"
    owners = ProcessSocket.objects.filter(port=8080).order_by("first_seen", "id")
    assert [(o.name, o.gone_at is None) for o in owners] == [("nc", False), ("python3", True)]
    assert list(SocketChange.objects.order_by("id").values_list("kind", "name", "old_name")) == [
        ("appeared", "nc", ""),
        ("owner_changed", "python3", "nc"),
        ("gone", "nc", ""),
    ]


def rule(**kw) -> Rule:
    return Rule.objects.create(action="allow", owner="secops", **kw)


def test_it_lets_process_rules_suppress_agent_events(poster):
    rule(process="ossec-csyslogd", reason="any server running ossec-csyslogd: no alert")
    rule(ip_cidr=IP, process="nc", reason="this host may run nc")

    poster.send(sock(1514, "ossec-csyslogd", "/var/ossec/bin/ossec-csyslogd"), sock(8080))
    other = agent_add(name="web3", ips=["127.0.0.7"])
    poster.post(poster.report({**sock(8080), "address": "127.0.0.7"}), token=other.token)

    suppressed = {
        (e.host.ip, e.port): e.suppressed for e in AlertEvent.objects.select_related("host")
    }
    assert suppressed == {(IP, 1514): True, (IP, 8080): True, ("127.0.0.7", 8080): False}


def test_it_does_not_reopen_fixed_process_events_when_a_scan_sees_the_port(poster):
    poster.send(sock(8080))
    event = AlertEvent.objects.get(kind="new_process")
    event_transition(event_id=event.pk, to_state=EventState.FIXED)
    host = Host.objects.get(ip=IP)
    run = ScanRun.objects.create(targets=IP, ports="8080")
    PortObservation.objects.create(run=run, host=host, proto="tcp", port=8080)

    reopened = events_reopen_seen(
        seen=PortObservation.objects.filter(run=run), at=datetime.now(UTC) + timedelta(1)
    )

    assert reopened == []
    assert AlertEvent.objects.get(pk=event.pk).state == EventState.FIXED


def hostile(rng: random.Random, poster) -> bytes:
    """One malformed or hostile payload: wrong types, huge strings, depth, bad bytes.

    A mutation can happen to be valid (pid null, name "0"): those are drawn again.
    """
    while True:
        raw = _mutation(rng, poster)
        try:
            report_parse(raw)
        except SchemaError:
            return raw
        if b"198.18.0.99" in raw:  # valid JSON, refused for the address (403)
            return raw


def _mutation(rng: random.Random, poster) -> bytes:
    good = poster.report(sock(8080))
    junk = [
        None, True, -1, 0, 65536, 2**70, 1.5, "", "x" * 5000, "\u0000", "\ud800", [], {},
        [[[[]]]], {"a": {"b": {}}}, "0", "22", "tcp\n", "../../etc/passwd", "💥" * 300,
    ]  # fmt: skip
    choice = rng.randrange(8)
    if choice == 0:  # a top-level field replaced
        key = rng.choice(list(good))
        return json.dumps({**good, key: rng.choice(junk)}).encode()
    if choice == 1:  # a socket field replaced or added
        key = rng.choice(["proto", "address", "port", "pid", "name", "exe", "cmdline",
                          "user", "started_at", "bogus"])  # fmt: skip
        return json.dumps({**good, "sockets": [{**sock(8080), key: rng.choice(junk)}]}).encode()
    if choice == 2:  # nesting
        depth = rng.choice([50, 1000, 100_000])
        return b'{"sockets": ' + b"[" * depth + b"]" * depth + b"}"
    if choice == 3:  # bytes that are not UTF-8 inside otherwise fine JSON
        raw = json.dumps(good).encode()
        cut = rng.randrange(len(raw))
        return raw[:cut] + bytes([rng.choice([0x80, 0xC3, 0xFF, 0xED])]) + raw[cut:]
    if choice == 4:  # truncated
        raw = json.dumps(good).encode()
        return raw[: rng.randrange(len(raw))]
    if choice == 5:  # random bytes
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
    if choice == 6:  # a whole different top level
        return json.dumps(rng.choice(junk)).encode()
    # a socket on an address that is not this agent's, or a negative port
    bad = rng.choice([{"address": "198.18.0.99"}, {"port": -rng.randrange(1, 70000)}])
    return json.dumps({**good, "sockets": [{**sock(8080), **bad}]}).encode()


def test_it_answers_1000_hostile_payloads_with_4xx_and_writes_nothing(poster):
    rng = random.Random(8)
    statuses = {}
    for _ in range(1000):
        raw = hostile(rng, poster)
        status = poster.post(raw=raw).status_code
        statuses.setdefault(status, raw)

    assert all(400 <= s < 500 for s in statuses), {s: r[:200] for s, r in statuses.items()}
    assert rows_written() == (0, 0, 0, 0)
    # The same agent still reports fine afterwards.
    assert poster.send(sock(8080)).status_code == 200


@pytest.mark.parametrize("method", ["get", "put"])
def test_it_only_takes_posts(client, method):
    assert getattr(client, method)(URL).status_code == 405


def test_it_writes_no_inventory_row_for_an_unchanged_report_until_the_step_passes(poster):
    first_at = datetime.now(UTC) - timedelta(hours=2)
    poster.send(sock(8080, pid=10), collected_at=first_at.isoformat())
    row = ProcessSocket.objects.get(port=8080)

    poster.send(sock(8080, pid=10), collected_at=(first_at + timedelta(minutes=5)).isoformat())
    assert ProcessSocket.objects.get(pk=row.pk).last_seen == first_at  # within the step

    later = first_at + timedelta(minutes=45)
    assert poster.send(sock(8080, pid=10), collected_at=later.isoformat()).status_code == 200
    assert ProcessSocket.objects.get(pk=row.pk).last_seen == later
    assert AgentReport.objects.count() == 3 and AlertEvent.objects.count() == 1
