"""The streaming import readers, without a database: same findings, strict types, streaming."""

import io
import json
import re
from pathlib import Path

import pytest

from scanner.engines import masscan, nmap
from scanner.findings import Finding
from scanner.imports import CHUNK_BYTES, FIELD_LIMITS, ImportFileError, ImportReport, findings_read

DATA = Path(__file__).resolve().parent / "engines" / "data"


def read(content: bytes | str, **kw) -> tuple[list[Finding], ImportReport]:
    if isinstance(content, str):
        content = content.encode()
    report = ImportReport()
    return list(findings_read(io.BytesIO(content), report=report, **kw)), report


def masscan_record(ip="198.18.0.5", **port) -> str:
    entry = {"port": 22, "proto": "tcp", "status": "open", "reason": "syn-ack", "ttl": 64}
    entry.update(port)
    return json.dumps({"ip": ip, "timestamp": "1781510400", "ports": [entry]})


def masscan_file(*records: str) -> str:
    return "[\n" + "\n,\n".join(records) + "\n]\n"


def nmap_host(ip: str, port: int = 22, **service) -> str:
    attrs = " ".join(f'{k}="{v}"' for k, v in {"name": "ssh", **service}.items())
    return (
        f'<host><status state="up"/><address addr="{ip}" addrtype="ipv4"/><ports>'
        f'<port protocol="tcp" portid="{port}"><state state="open"/>'
        f"<service {attrs}><cpe>cpe:/a:openbsd:openssh</cpe></service></port>"
        "</ports></host>\n"
    )


NMAP_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE nmaprun>\n<nmaprun scanner="nmap">\n'


@pytest.mark.parametrize("name", ["nmap-lab.xml", "nmap-loopback.xml", "nmap-ipv6.xml"])
def test_it_reads_real_nmap_xml_like_the_fingerprint_parser(name):
    text = (DATA / name).read_text()
    expected = {f for host in nmap.parse_xml(text) for f in host.findings}
    found, report = read(text)
    assert set(found) == expected and expected
    assert report.format == "nmap" and not report.truncated


def test_it_reads_real_masscan_json_like_the_sweep_parser():
    text = (DATA / "masscan-lab.json").read_text()
    found, report = read(text)
    assert set(found) == set(masscan.parse_json(text))
    assert len(set(found)) == 14 and report.format == "masscan"


def test_it_counts_only_open_status_entries_and_skips_untracked_protocols():
    found, report = read(
        masscan_file(
            masscan_record(port=22),
            masscan_record(port=23, status="closed"),
            # A banner entry: the port's status entry is a record of its own.
            '{"ip": "198.18.0.5", "ports": [{"port": 22, "proto": "tcp", "service": '
            '{"name": "ssh", "banner": "SSH-2.0"}}]}',
            masscan_record(port=0, proto="icmp"),
            '{"finished": 1}',
        )
    )
    assert found == [Finding("198.18.0.5", 22)]
    assert report.untracked == 1


def test_it_turns_ipv4_mapped_ipv6_into_ipv4():
    found, _ = read(masscan_file(masscan_record(ip="::ffff:198.18.0.7", port=80)))
    assert found == [Finding("198.18.0.7", 80)]


@pytest.mark.parametrize("port", [True, "22", 22.0, 0, 65536, -22, None])
def test_it_refuses_ports_that_are_not_integers_in_range(port):
    message = f"record 2: port must be an integer 1-65535, not {port!r}"
    with pytest.raises(ImportFileError, match=f"^{re.escape(message)}$"):
        read(masscan_file(masscan_record(), masscan_record(port=port)))


def test_it_refuses_an_integer_where_an_address_belongs():
    with pytest.raises(
        ImportFileError, match="^record 1: address must be a string, not 2130706435"
    ):
        read(masscan_file(masscan_record(ip=2130706435)))


def test_it_clips_fingerprint_text_to_the_column_widths():
    found, _ = read(NMAP_HEAD + nmap_host("198.18.0.5", product="x" * 5000) + "</nmaprun>\n")
    assert len(found[0].product) == FIELD_LIMITS["product"] == 200


def test_it_keeps_what_came_before_the_cut_only_when_allowed():
    text = NMAP_HEAD + nmap_host("198.18.0.5") + nmap_host("198.18.0.6")[:60]
    with pytest.raises(ImportFileError, match="^truncated: the XML ends before </nmaprun>"):
        read(text)
    found, report = read(text, allow_truncated=True)
    assert [f.ip for f in found] == ["198.18.0.5"] and report.truncated

    cut = masscan_file(masscan_record(), masscan_record(ip="198.18.0.6"))[:-20]
    with pytest.raises(ImportFileError, match="^truncated: record 2 is cut short"):
        read(cut)
    found, report = read(cut, allow_truncated=True)
    assert [f.ip for f in found] == ["198.18.0.5"] and report.truncated


class CountingStream(io.BytesIO):
    """Remembers how many bytes were read, so a test can see when a finding came out."""

    def read(self, size=-1):
        data = super().read(size)
        self.consumed = self.tell()
        return data


@pytest.mark.parametrize("fmt", ["nmap", "masscan"])
def test_it_yields_findings_before_reading_the_whole_file(fmt):
    hosts = 40_000  # about 5-16 MB: many chunks
    if fmt == "nmap":
        body = "".join(nmap_host(f"198.18.{i // 250}.{i % 250 + 1}") for i in range(hosts))
        content = (NMAP_HEAD + body + "</nmaprun>\n").encode()
    else:
        records = (masscan_record(ip=f"198.18.{i // 250}.{i % 250 + 1}") for i in range(hosts))
        content = masscan_file(*records).encode()
    stream = CountingStream(content)
    findings = findings_read(stream, report=ImportReport())
    first = next(findings)
    # A reader that loads the file (or builds the list) first would have read all of it.
    assert first.ip == "198.18.0.1"
    assert stream.consumed <= 2 * CHUNK_BYTES < len(content) / 4
    assert sum(1 for _ in findings) == hosts - 1


PORT_HOST = '<host><address addr="198.18.0.5" addrtype="ipv4"/><ports>{}</ports></host>\n'


@pytest.mark.parametrize(
    ("port", "expected"),
    [
        # No <state> child: not open, whatever an attribute says.
        ('<port protocol="tcp" portid="22" state="open"></port>', []),
        # A "service" attribute was read as the <service> element: a traceback.
        (
            '<port protocol="tcp" portid="22" service="x" cpes="abc"><state state="open"/></port>',
            [Finding(ip="198.18.0.5", port=22)],
        ),
    ],
    ids=["state-attribute", "service-and-cpes-attributes"],
)
def test_attributes_of_a_port_never_stand_for_its_state_service_or_cpe(port, expected):
    found, _ = read(NMAP_HEAD + PORT_HOST.format(port) + "</nmaprun>\n")
    assert found == expected


def test_it_refuses_a_port_inside_a_port_in_one_line():
    # The inner </port> closed the port the outer <cpe> belonged to: a traceback.
    port = (
        '<port protocol="tcp" portid="22"><state state="open"/>'
        '<cpe><port protocol="tcp" portid="23"/></cpe></port>'
    )
    with pytest.raises(ImportFileError, match="a <port> inside a <port>"):
        read(NMAP_HEAD + PORT_HOST.format(port) + "</nmaprun>\n")
