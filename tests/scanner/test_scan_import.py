"""scan_import: nmap XML and masscan JSON from elsewhere become runs (history back-fills)."""

import subprocess
from datetime import datetime
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from scanner.models import PortObservation, ScanRun
from tests.scanner.test_pipeline import SSH_BANNER, Listeners, free_ports

# The layout masscan -oJ writes (one record per line, commas between records).
MASSCAN_JSON = """[
{   "ip": "198.18.0.5",   "timestamp": "1781510400", "ports": [ {"port": 22, "proto": "tcp", "status": "open", "reason": "syn-ack", "ttl": 64} ] }
,
{   "ip": "198.18.0.6",   "timestamp": "1781510400", "ports": [ {"port": 8080, "proto": "tcp", "status": "open", "reason": "syn-ack", "ttl": 64} ] }
,
{   "ip": "198.19.7.7",   "timestamp": "1781510400", "ports": [ {"port": 80, "proto": "tcp", "status": "open", "reason": "syn-ack", "ttl": 64} ] }
]
"""


def run_import(*args):
    out, err = StringIO(), StringIO()
    call_command("scan_import", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def lab_scope(db):
    call_command("scope", "add", "198.18.0.0/24", "--zone", "internal")
    call_command("scope", "add", "127.0.0.0/8", "--zone", "internal")


def test_it_imports_masscan_json_at_the_given_time_and_skips_out_of_scope(lab_scope, tmp_path):
    path = tmp_path / "masscan.json"
    path.write_text(MASSCAN_JSON)
    out, err = run_import(
        str(path), "--at", "2026-06-15T08:00:00+00:00", "--targets", "198.18.0.0/16"
    )
    assert "2 open port(s) on 2 host(s) at 2026-06-15T08:00:00+00:00" in out
    assert "skipped 1 finding(s) outside the configured scope" in err
    run = ScanRun.objects.get()
    # It covers what --targets said, inside the scope; the ports masscan reported open.
    assert (run.targets, run.ports) == ("198.18.0.0/24", "22,8080")
    assert run.source_name == "masscan.json"  # the run page: "imported from masscan.json"
    assert run.source == "import" and run.finished_at == datetime.fromisoformat(
        "2026-06-15T08:00:00+00:00"
    )
    assert set(PortObservation.objects.values_list("host__ip", "port")) == {
        ("198.18.0.5", 22),
        ("198.18.0.6", 8080),
    }


@pytest.mark.process
def test_it_imports_real_nmap_xml_with_fingerprints(lab_scope, tmp_path):
    (port,) = free_ports(1, "127.0.0.9")
    xml = tmp_path / "nmap.xml"
    with Listeners([("127.0.0.9", port, SSH_BANNER)]):
        subprocess.run(
            ["nmap", "-sV", "-Pn", "-n", "-p", str(port), "-oX", str(xml), "127.0.0.9"],
            check=True,
            capture_output=True,
        )
    out, _ = run_import(str(xml))
    assert "1 open port(s) on 1 host(s)" in out
    ssh = PortObservation.objects.get(host__ip="127.0.0.9", port=port)
    assert ssh.service == "ssh" and "OpenSSH" in ssh.product


@pytest.mark.parametrize(
    "content, args, message",
    [
        ("hello", [], "not an nmap XML (-oX) or masscan JSON (-oJ) file"),
        (MASSCAN_JSON, ["--at", "yesterday"], "is not an ISO 8601 time"),
        (
            MASSCAN_JSON.replace("198.18.0", "198.19.0"),
            ["--targets", "198.19.0.0/16"],
            "no open port inside scope",
        ),
        (MASSCAN_JSON, [], "a masscan file does not say what it scanned: pass --targets"),
        (MASSCAN_JSON, ["--targets", "db.example.com"], "--targets: 'db.example.com'"),
        (MASSCAN_JSON, ["--targets", "198.18.0.0/24", "--ports", "0-22"], "--ports: "),
    ],
)
def test_it_rejects_bad_files_with_one_line(lab_scope, tmp_path, content, args, message):
    path = tmp_path / "in"
    path.write_text(content)
    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_import(str(path), *args)
    with pytest.raises(CommandError, match="no such file"):
        run_import(str(tmp_path / "missing.xml"))
    assert not ScanRun.objects.exists()
