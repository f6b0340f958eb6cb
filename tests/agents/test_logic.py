"""The agent report's schema and the agent diff, without a database."""

import json
import random

import pytest

from agents.diff import AddressRefused, HostAddresses, agent_diff, sockets_by_port
from agents.schema import SchemaError, Socket, _socket, _socket_quick, report_parse

REPORT = {
    "report_id": "0b0f5c1e-8a44-4e59-9a43-0e6b1c0d9f10",
    "seq": 1,
    "collected_at": "2026-11-21T10:00:00+00:00",
    "sockets": [{"proto": "tcp", "address": "0.0.0.0", "port": 22, "name": "sshd"}],
}


def body(**changes) -> bytes:
    return json.dumps({**REPORT, **changes}).encode()


def sock_body(**changes) -> bytes:
    return body(sockets=[{**REPORT["sockets"][0], **changes}])


def field_of(raw: bytes) -> str:
    with pytest.raises(ValueError) as info:
        report_parse(raw)
    return info.value.field


def test_it_parses_a_report_and_maps_ipv4_mapped_addresses_to_ipv4():
    report = report_parse(sock_body(address="::ffff:127.0.0.5", exe="/usr/sbin/sshd", pid=7))

    assert report.seq == 1 and report.collected_at.isoformat() == REPORT["collected_at"]
    assert report.sockets == (
        Socket("tcp", "127.0.0.5", 22, pid=7, name="sshd", exe="/usr/sbin/sshd"),
    )


@pytest.mark.parametrize(
    "raw, field",
    [
        (sock_body(port=0), "sockets[0].port"),
        (sock_body(port=65536), "sockets[0].port"),
        (sock_body(port=-22), "sockets[0].port"),
        (sock_body(port=True), "sockets[0].port"),
        (sock_body(port="22"), "sockets[0].port"),
        (sock_body(proto="sctp"), "sockets[0].proto"),
        (sock_body(address="fe80::1%eth0"), "sockets[0].address"),
        (sock_body(address="localhost"), "sockets[0].address"),
        (sock_body(name="x" * 129), "sockets[0].name"),
        (sock_body(cmdline="a\x00b"), "sockets[0].cmdline"),
        (sock_body(exe="\ud800"), "sockets[0].exe"),
        (sock_body(colour="red"), "sockets[0].colour"),
        (body(extra=1), "extra"),
        (body(seq=1.5), "seq"),
        (body(report_id="../../etc"), "report_id"),
        (body(collected_at="2026-11-21T10:00:00"), "collected_at"),
        (body(sockets={}), "sockets"),
        (json.dumps({k: v for k, v in REPORT.items() if k != "seq"}).encode(), "seq"),
        (b"\xff\xfe{}", "body"),
        (b"[" * 100_000 + b"]" * 100_000, "body"),
        (b'{"seq": 1' + b"0" * 5000 + b"}", "body"),
        (b"NaN", "body"),
    ],
)
def test_it_refuses_bad_reports_naming_the_field(raw, field):
    assert field_of(raw) == field


# Values that are right for some field and wrong for others, at and past the limits.
ODD_VALUES = [
    None, True, False, 0, 1, -1, 22, 65535, 65536, 2**31 - 1, 2**31, 1.5, "", "22", "tcp",
    "udp", "TCP", "sctp", "127.0.0.5", "::", "::ffff:127.0.0.1", "fe80::1%eth0", " 127.0.0.1",
    "x" * 45, "x" * 46, "x" * 64, "x" * 65, "x" * 128, "x" * 129, "x" * 1024, "x" * 1025,
    "a\x00b", "a\nb", "\x85", "\ud800", "é", "2026-11-20T08:00:00+00:00",
    "2026-11-20T08:00:00", "yesterday", [], {}, ["tcp"], {"a": 1},
]  # fmt: skip
FIELDS = ["proto", "address", "port", "pid", "name", "exe", "cmdline", "user", "started_at"]


def test_the_quick_socket_check_is_never_more_lenient_than_the_full_one():
    """The fast path for well-formed sockets either gives what the field-by-field check
    gives, or steps aside (None) for it: on 20,000 mutations of a good socket."""
    good = {"proto": "tcp", "address": "127.0.0.5", "port": 22, "pid": 7, "name": "sshd",
            "exe": "/usr/sbin/sshd", "cmdline": "sshd -D", "user": "root",
            "started_at": "2026-11-20T08:00:00+00:00"}  # fmt: skip
    rng = random.Random(8)
    quick_taken = refused = 0
    for _ in range(20_000):
        item = dict(good)
        for _ in range(rng.randint(1, 3)):
            action = rng.random()
            if action < 0.1:
                item.pop(rng.choice(FIELDS), None)
            elif action < 0.15:
                item[rng.choice(["colour", "Port", ""])] = 1
            else:
                item[rng.choice(FIELDS)] = rng.choice(ODD_VALUES)
        try:
            full = _socket(item, 0)
        except SchemaError:
            full = None
            refused += 1
        quick = _socket_quick(item)
        assert quick is None or quick == full, item
        quick_taken += quick is not None
    assert quick_taken > 1000 and refused > 10_000  # both paths were exercised


HOSTS = HostAddresses({"127.0.0.5": 1, "::5": 2})


def test_it_puts_wildcard_sockets_on_every_host_of_their_family_and_loopback_on_the_first():
    assert HOSTS.hosts_for("0.0.0.0") == (1,)
    assert HOSTS.hosts_for("::") == (1, 2)
    assert HOSTS.hosts_for("::5") == (2,)
    assert HOSTS.hosts_for("::1") == (1,)
    with pytest.raises(AddressRefused):
        HOSTS.hosts_for("198.18.0.7")


def seen(*sockets):
    return sockets_by_port(sockets, HOSTS).keys()


NC = Socket("tcp", "127.0.0.5", 8080, pid=10, name="nc", exe="/usr/bin/nc")
NC_RESTARTED = Socket("tcp", "127.0.0.5", 8080, pid=99, name="nc", exe="/usr/bin/nc")
PY = Socket("tcp", "127.0.0.5", 8080, pid=11, name="python3", exe="/usr/bin/python3")


def test_it_calls_a_new_owner_new_a_replaced_owner_changed_and_a_restart_nothing():
    assert [(c.kind, c.identity) for c in agent_diff([], seen(NC)).changes] == [
        ("new_process", ("nc", "/usr/bin/nc"))
    ]
    assert agent_diff(seen(NC), seen(NC_RESTARTED)).changes == ()
    changed = agent_diff(seen(NC), seen(PY)).changes
    assert [(c.kind, c.identity, c.previous) for c in changed] == [
        ("process_changed", ("python3", "/usr/bin/python3"), ("nc", "/usr/bin/nc")),
        ("gone", ("nc", "/usr/bin/nc"), None),
    ]
    # A second owner beside the first (SO_REUSEPORT): a new pair, not a change.
    assert [c.kind for c in agent_diff(seen(NC), seen(NC, PY)).changes] == ["new_process"]
