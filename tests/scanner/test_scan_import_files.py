"""scan_import on hostile, broken and odd files: one line, exit 1, nothing written."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from scanner.models import Host, Port, PortObservation, ScanRun

ROOT = Path(__file__).resolve().parent.parent.parent
# masscan files do not say what was scanned: every import states it (nmap files too, here).
TARGETS = ("--targets", "198.18.0.0/24,fd00:18::/64")
NMAP_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE nmaprun>\n<nmaprun scanner="nmap">\n'


def host_xml(ip="198.18.0.5", portid="22", addrtype="ipv4", proto="tcp") -> str:
    return (
        f'<host><status state="up"/><address addr="{ip}" addrtype="{addrtype}"/><ports>'
        f'<port protocol="{proto}" portid="{portid}"><state state="open"/>'
        '<service name="ssh" product="OpenSSH"/></port></ports></host>\n'
    )


def nmap_xml(*hosts: str, head: str = NMAP_HEAD) -> str:
    return head + "".join(hosts or [host_xml()]) + "</nmaprun>\n"


def record(ip="198.18.0.5", **port) -> dict:
    return {
        "ip": ip,
        "timestamp": "1781510400",
        "ports": [{"port": 22, "proto": "tcp", "status": "open", **port}],
    }


def masscan_json(*records) -> str:
    # The layout masscan -oJ writes: one record per line, commas between records.
    return "[\n" + "\n,\n".join(json.dumps(r) for r in records or [record()]) + "\n]\n"


BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE nmaprun [\n <!ENTITY lol "lol">\n'
    + "".join(
        f' <!ENTITY lol{i} "{f"&lol{i - 1};" * 10 if i > 1 else "&lol;" * 10}">\n'
        for i in range(1, 10)
    )
    + ']>\n<nmaprun scanner="&lol9;"></nmaprun>\n'
)
# A good first batch (more than results.BATCH_SIZE findings), then one bad record.
LATE_ERROR = masscan_json(
    *[record(ip=f"198.18.0.{i % 250 + 1}", port=1000 + i) for i in range(2500)],
    record(port=True),
)

# (id, file content (bytes/str) or a path maker, what the one-line message says)
HOSTILE = [
    ("empty", b"", "empty file"),
    ("blank", b" \n\t\r\n", "empty file"),
    ("binary", bytes(range(256)) * 64, "not an nmap XML (-oX) or masscan JSON (-oJ) file"),
    ("billion-laughs", BILLION_LAUGHS, "line 2: DTDs and entities are not accepted"),
    (
        "external-entity",
        '<?xml version="1.0"?>\n<!DOCTYPE nmaprun [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
        "<nmaprun>&x;</nmaprun>\n",
        "DTDs and entities are not accepted",
    ),
    (
        "external-dtd",
        '<?xml version="1.0"?>\n<!DOCTYPE nmaprun SYSTEM "http://198.18.0.1/nmap.dtd">\n'
        "<nmaprun></nmaprun>\n",
        "DTDs and entities are not accepted",
    ),
    (
        "undefined-entity",
        nmap_xml(head=NMAP_HEAD + "&x;"),
        "not well-formed XML (undefined entity)",
    ),
    ("xml-truncated", nmap_xml(host_xml(), host_xml("198.18.0.6"))[:-40], "truncated: the XML"),
    (
        "xml-mismatched",
        NMAP_HEAD + "<host></hots></nmaprun>",
        "line 4: not well-formed XML (mismatched tag)",
    ),
    ("xml-wrong-root", '<?xml version="1.0"?>\n<html></html>\n', "root element is <html>"),
    ("xml-deep", NMAP_HEAD + "<a>" * 100 + "</a>" * 100 + "</nmaprun>", "deeper than 64 levels"),
    ("xml-port-range", nmap_xml(host_xml(portid="70000")), "port must be 1-65535, not '70000'"),
    ("xml-port-negative", nmap_xml(host_xml(portid="-1")), "port must be 1-65535, not '-1'"),
    ("xml-port-zero", nmap_xml(host_xml(portid="0")), "port must be 1-65535, not '0'"),
    ("xml-bad-ip", nmap_xml(host_xml(ip="198.18.0.256")), "'198.18.0.256' is not an IP address"),
    ("xml-bad-proto", nmap_xml(host_xml(proto="http")), "protocol must be tcp or udp"),
    ("xml-utf16", nmap_xml().encode("utf-16"), "UTF-16 text"),
    ("json-truncated", masscan_json(record(), record())[:-3], "truncated: the JSON array has no"),
    ("json-cut-record", masscan_json(record(), record())[:-20], "truncated: record 2 is cut"),
    ("json-object", json.dumps(record()), "JSON that is not an array"),
    ("json-number", "42\n", "JSON that is not an array"),
    ("json-not-records", "[1, 2]\n", "record 1: expected an object, found '1'"),
    ("json-deep", '[{"a": ' + "[" * 100_000 + "]" * 100_000 + "}]", "deeper than 16 levels"),
    (
        "json-port-true",
        masscan_json(record(port=True)),
        "port must be an integer 1-65535, not True",
    ),
    (
        "json-port-string",
        masscan_json(record(port="22")),
        "port must be an integer 1-65535, not '22'",
    ),
    ("json-port-range", masscan_json(record(port=65536)), "not 65536"),
    (
        "json-port-negative",
        masscan_json(record(port=-1)),
        "port must be an integer 1-65535, not -1",
    ),
    ("json-port-huge", '[{"ip": "198.18.0.5", "ports": [{"port": 1' + "0" * 5000 + "}]}]", "JSON"),
    (
        "json-ip-int",
        masscan_json(record(ip=2130706435)),
        "address must be a string, not 2130706435",
    ),
    ("json-ip-bad", masscan_json(record(ip="198.18.0.256")), "'198.18.0.256' is not an IP"),
    ("json-ip-zone", masscan_json(record(ip="fe80::1%eth0")), "has a zone index"),
    ("json-proto", masscan_json(record(proto="http")), "protocol must be tcp or udp, not 'http'"),
    ("json-no-ip", masscan_json({"ports": []}), 'record 1: no "ip"'),
    ("json-not-utf8", b'[{"ip": "198.18.0.5\xff"}]', "not UTF-8 text near byte 19"),
    ("json-utf16", masscan_json().encode("utf-16"), "UTF-16 text"),
    ("json-junk-after", masscan_json() + "rm -rf /\n", "unexpected 'r' after the closing ]"),
    ("late-error", LATE_ERROR, "record 2501: port must be an integer 1-65535, not True"),
    ("directory", lambda tmp: tmp, ": a directory"),
    ("fifo", lambda tmp: os.mkfifo(tmp / "fifo") or tmp / "fifo", "not a regular file"),
    # A regular file whose read fails, even for root: /proc/self/mem at offset 0 is unmapped.
    ("unreadable", lambda tmp: Path("/proc/self/mem"), "cannot read (Input/output error)"),
]


@pytest.fixture
def lab_scope(db):
    call_command("scope", "add", "198.18.0.0/24", "--zone", "internal")
    call_command("scope", "add", "fd00:18::/64", "--zone", "external")


def hostile_path(tmp_path: Path, content) -> Path:
    if callable(content):
        return content(tmp_path)
    path = tmp_path / "results"
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("content, message", [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_it_refuses_a_hostile_file_in_one_line_and_writes_nothing(
    lab_scope, tmp_path, content, message
):
    path = hostile_path(tmp_path, content)
    started = time.monotonic()
    with pytest.raises(CommandError) as refused:
        call_command("scan_import", str(path), *TARGETS)
    text = str(refused.value)
    assert text.startswith(f"{path}: ") and message in text, text
    assert "\n" not in text and len(text) < 200 + len(str(path))
    assert time.monotonic() - started < 10  # no entity expansion, no quadratic scan
    assert not ScanRun.objects.exists()
    assert not Host.objects.exists() and not PortObservation.objects.exists()
    assert not Port.objects.exists()


def test_it_imports_a_truncated_file_as_a_degraded_run_when_allowed(lab_scope, tmp_path, capsys):
    path = tmp_path / "cut.xml"
    path.write_text(nmap_xml(host_xml(), host_xml("198.18.0.6"))[:-40])
    call_command("scan_import", str(path), "--allow-truncated")
    assert "1 open port(s) on 1 host(s)" in capsys.readouterr().out
    run = ScanRun.objects.get()
    assert run.degraded and run.error == "truncated input" and run.state == "finished"
    assert list(PortObservation.objects.values_list("host__ip", "port")) == [("198.18.0.5", 22)]


def test_it_imports_ipv4_and_ipv6_hosts_from_one_file(lab_scope, tmp_path, capsys):
    path = tmp_path / "mixed.json"
    # The old reader sorted IPv4Address with IPv6Address objects: a TypeError traceback.
    path.write_text(masscan_json(record(ip="fd00:18::5"), record(), record(ip="198.18.0.10")))
    call_command("scan_import", str(path), *TARGETS)
    assert "3 open port(s) on 3 host(s)" in capsys.readouterr().out
    run = ScanRun.objects.get()
    assert run.targets == "198.18.0.0/24,fd00:18::/64" and run.zone == "internal"


def test_it_records_an_external_only_file_in_the_external_zone(lab_scope, tmp_path):
    path = tmp_path / "ext.xml"
    path.write_text(nmap_xml(host_xml(ip="fd00:18::7", addrtype="ipv6")))
    call_command("scan_import", str(path))
    assert ScanRun.objects.get().zone == "external"
    assert PortObservation.objects.get().host.ip == "fd00:18::7"


def test_it_stores_a_long_product_name_clipped_on_every_database(lab_scope, tmp_path):
    path = tmp_path / "long.xml"
    long_host = host_xml().replace('product="OpenSSH"', f'product="{"x" * 1000}"')
    path.write_text(nmap_xml(long_host))
    call_command("scan_import", str(path))
    assert PortObservation.objects.get().product == "x" * 200


@pytest.mark.process
def test_it_exits_1_with_one_line_from_the_real_command(tmp_path):
    # Through manage.py in its own process: exit status and stderr as a user sees them.
    env = {
        **os.environ,
        "PORTMON_DATA_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3",
    }
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "-v0"], env=env, check=True, cwd=ROOT)
    subprocess.run(
        [*manage, "scope", "add", "198.18.0.0/24", "--zone", "internal"],
        env=env,
        check=True,
        cwd=ROOT,
    )
    files = {name: content for name, content, _ in HOSTILE}
    for name in ("json-deep", "billion-laughs", "xml-port-range", "directory"):
        path = hostile_path(tmp_path, files[name])
        done = subprocess.run(
            [*manage, "scan_import", str(path), *TARGETS],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 1, (name, done.stderr)
        assert done.stderr.startswith("CommandError: ") and done.stderr.count("\n") == 1, name


def test_an_nmap_udp_import_covers_udp_ports_only(lab_scope, tmp_path):
    """nmap -sS -sU: each <scaninfo> is its protocol's coverage; a UDP-only file covers no
    TCP port (it must not count the TCP ports of its hosts as missed)."""
    head = NMAP_HEAD + (
        '<scaninfo type="udp" protocol="udp" numservices="2" services="53,161"/>\n'
        '<scaninfo type="syn" protocol="tcp" numservices="1" services="22"/>\n'
    )
    path = tmp_path / "both.xml"
    path.write_text(nmap_xml(host_xml(), host_xml(portid="161", proto="udp"), head=head))
    call_command("scan_import", str(path))
    run = ScanRun.objects.get()
    assert (run.ports, run.udp_ports) == ("22", "53,161")
    assert set(PortObservation.objects.values_list("proto", "port")) == {("tcp", 22), ("udp", 161)}

    udp_only = tmp_path / "udp.xml"
    head = NMAP_HEAD + '<scaninfo type="udp" protocol="udp" services="161"/>\n'
    udp_only.write_text(nmap_xml(host_xml(portid="161", proto="udp"), head=head))
    call_command("scan_import", str(udp_only))
    run = ScanRun.objects.order_by("-pk").first()
    assert (run.ports, run.udp_ports) == ("", "161")
