"""nmap fingerprints against real loopback services, and parsing of real nmap XML."""

import asyncio
import contextlib
import ipaddress
import random
import time
from pathlib import Path

import pytest

from scanner.engines import EngineError, nmap, nmap_probes
from scanner.findings import Finding
from tests.lab.services import handle_redis
from tests.scanner.engines.conftest import DATA, HTTP_REPLY, free_port_block

OPENSSH = {"service": "ssh", "product": "OpenSSH", "version": "9.2p1 Debian 2+deb12u3"}
NGINX = {"service": "http", "product": "nginx", "version": "1.22.1"}
NGINX_CPE = "cpe:/a:igor_sysoev:nginx:1.22.1"
# The waits a scan uses (settings PORTMON_NMAP_NULL_WAIT_MS, PORTMON_NMAP_GENERICLINES_WAIT_MS).
SHORT_WAITS = {"NULL": 2000, "GenericLines": 2000}


def fields(finding: Finding) -> dict:
    return {"service": finding.service, "product": finding.product, "version": finding.version}


@pytest.mark.process
def test_it_fingerprints_ssh_and_http_on_loopback(services):
    ssh = services.start("ssh", "127.0.0.4")
    http = services.start("http", "127.0.0.4")
    closed = free_port_block(1)

    result = nmap.fingerprint(
        ip="127.0.0.4", ports=[ssh, http, closed], options=nmap.FingerprintOptions(timeout=60)
    )

    assert result.status == "up" and result.ip == "127.0.0.4"
    by_port = {f.port: f for f in result.findings}
    assert set(by_port) == {ssh, http}  # the closed port is not a finding
    assert fields(by_port[ssh]) == OPENSSH
    assert by_port[ssh].extrainfo == "protocol 2.0"
    assert by_port[ssh].cpe.startswith("cpe:/a:openbsd:openssh:9.2p1")
    assert fields(by_port[http]) == NGINX


@pytest.mark.process
def test_it_fingerprints_over_ipv6(services):
    ssh = services.start("ssh", "::1")

    result = nmap.fingerprint(
        ip=ipaddress.ip_address("::1"), ports=[ssh], options=nmap.FingerprintOptions(timeout=60)
    )

    assert result.status == "up"
    assert [fields(f) for f in result.findings] == [OPENSSH]
    assert result.findings[0].ip == "::1"


@pytest.mark.process
def test_one_run_fingerprints_several_hosts_each_on_its_own_ports(services):
    ssh = services.start("ssh", "127.0.0.4")
    http = services.start("http", "127.0.0.6")
    services.start("ssh", "127.0.0.6", port=ssh)  # open, but not asked for on that host

    results = nmap.fingerprint_many(
        hosts={"127.0.0.4": [ssh], "127.0.0.6": [http], "127.0.0.7": [http]},
        options=nmap.FingerprintOptions(timeout=60),
    )

    assert [fields(f) for f in results["127.0.0.4"].findings] == [OPENSSH]
    assert [(f.ip, f.port) for f in results["127.0.0.6"].findings] == [("127.0.0.6", http)]
    assert fields(results["127.0.0.6"].findings[0]) == NGINX
    assert results["127.0.0.7"].findings == []  # nothing listens there: no finding


def test_it_batches_hosts_by_ip_version_count_and_probe_budget():
    hosts = {
        "198.18.0.1": [22, 80],
        "::1": [22],
        "198.18.0.2": [443],
        "198.18.0.3": list(range(1000, 1100)),
        "198.18.0.10": [22],
    }

    assert nmap.batches(hosts, max_hosts=2) == [
        {"198.18.0.1": [22, 80], "198.18.0.2": [443]},
        {"198.18.0.3": list(range(1000, 1100)), "198.18.0.10": [22]},
        {"::1": [22]},
    ]
    # 3 hosts x 3 ports fits in 9 probes; the 100-port host then needs a run of its own.
    assert nmap.batches(hosts, max_probes=9) == [
        {"198.18.0.1": [22, 80], "198.18.0.2": [443]},
        {"198.18.0.3": list(range(1000, 1100))},
        {"198.18.0.10": [22]},
        {"::1": [22]},
    ]


@pytest.mark.process
def test_it_hands_over_each_port_the_moment_nmap_names_it_not_when_the_slowest_ends(services):
    # The tail: one slow and one silent service next to two fast ones on one host.
    ssh = services.start("ssh", "127.0.0.8")
    http = services.start("http", "127.0.0.8")
    slow = services.start("slow", "127.0.0.8")
    silent = services.start("silent", "127.0.0.8")
    started = time.monotonic()
    named_at = {}

    def on_finding(finding):
        named_at[finding.port] = (time.monotonic() - started, fields(finding))

    results = nmap.fingerprint_many(
        hosts={"127.0.0.8": [ssh, http, slow, silent]},
        on_finding=on_finding,
        options=nmap.FingerprintOptions(timeout=12),
    )
    took = time.monotonic() - started

    assert set(named_at) == {ssh, http}
    assert named_at[ssh][1] == OPENSSH and named_at[ssh][0] < 3  # a banner: at once
    assert named_at[http][1] == NGINX and named_at[http][0] < 9  # after the 6 s NULL probe
    assert took >= 12  # the slow ones had their whole budget, and not much more:
    assert took < 12 + 8 + 6 + 5  # nmap -sV alone spends 164 s on each of them
    result = results["127.0.0.8"]
    assert result.status == "unknown" and "timeout" in result.error  # never "closed"
    assert {f.port: fields(f) for f in result.findings} == {ssh: OPENSSH, http: NGINX}
    # The host's XML was lost to its timeout; a second short run over the two named ports
    # gives them what only the XML has, as if no slow port had been there.
    cpe = {f.port: f.cpe for f in result.findings}
    assert cpe[ssh].startswith("cpe:/a:openbsd:openssh:9.2p1") and cpe[http] == NGINX_CPE


@pytest.mark.process
def test_it_probes_every_port_of_a_run_at_once_past_nmaps_own_parallelism(services):
    # nmap -sV probes 20 services at a time by default: 25 silent ports would hold the
    # fast one back by a whole probe round. With all of them at once it is named at once.
    silent = [services.start("silent", "127.0.0.9") for _ in range(25)]
    ssh = services.start("ssh", "127.0.0.10")
    named_at = {}
    started = time.monotonic()

    nmap.fingerprint_many(
        hosts={"127.0.0.9": silent, "127.0.0.10": [ssh]},
        on_finding=lambda f: named_at.setdefault(f.port, time.monotonic() - started),
        options=nmap.FingerprintOptions(timeout=8),
    )

    assert list(named_at) == [ssh] and named_at[ssh] < 3


@pytest.mark.process
def test_a_crafted_banner_cannot_name_another_port(services):
    # nmap copies the comment of an Apache Server header into the trace line: pipes and a
    # fake match in it must neither name another port nor shift the fields of its own.
    comment = "(x|y|z 127.0.0.11:1 is ssh.  Version: |Fake|1|)"
    fake = (
        b"HTTP/1.1 200 OK\r\nServer: Apache/2.4.1 " + comment.encode() + b"\r\n"
        b"Content-Length: 2\r\nConnection: close\r\n\r\nok"
    )

    async def crafted(reader, writer):
        with contextlib.suppress(Exception):
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            writer.write(fake)
            await writer.drain()
        writer.close()

    http = services.start(crafted, "127.0.0.11")
    ssh = services.start("ssh", "127.0.0.11")
    streamed = []

    results = nmap.fingerprint_many(
        hosts={"127.0.0.11": [http, ssh]},
        on_finding=streamed.append,
        options=nmap.FingerprintOptions(timeout=30),
    )

    apache = {"service": "http", "product": "Apache httpd", "version": "2.4.1"}
    assert {f.port: fields(f) for f in streamed} == {http: apache, ssh: OPENSSH}
    assert [f.extrainfo for f in streamed if f.port == http] == [comment]
    final = {f.port: f for f in results["127.0.0.11"].findings}
    assert set(final) == {http, ssh} and final[http].extrainfo == comment  # the XML agrees


TRACE = "Service scan match (Probe GetRequest matched with GetRequest line 6948): "


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            TRACE + "127.0.0.1:8080 is http.  Version: |nginx|1.22.1||",
            Finding("127.0.0.1", 8080, "tcp", "http", "nginx", "1.22.1"),
        ),
        (
            TRACE + "::1:22 is ssh.  Version: |OpenSSH|9.2p1|protocol 2.0|",
            Finding("::1", 22, "tcp", "ssh", "OpenSSH", "9.2p1", "protocol 2.0"),
        ),
        (
            TRACE + "127.0.0.1:443 is SSL/http.  Version: |nginx|||",
            Finding("127.0.0.1", 443, "tcp", "ssl/http", "nginx"),
        ),
        (
            "Service scan hard match (Probe NULL matched with NULL): 127.0.0.1:6379 is redis",
            Finding("127.0.0.1", 6379, "tcp", "redis"),
        ),
        # nmap found TLS and probes again through it: not the answer yet.
        ("Service scan hard match (Probe SSLSessionReq matched with X): 127.0.0.1:4 is ssl", None),
        # Soft matches are not final; the XML has what nmap settled on.
        ("Service scan soft match (Probe NULL matched with NULL): 127.0.0.1:80 is http", None),
        ("Service scan sending probe NULL to 127.0.0.1:22 (tcp)", None),
        (TRACE + "127.0.0.1:0 is http.  Version: |a|b|c|", None),
        (TRACE + "127.0.0.1:99999 is http.  Version: |a|b|c|", None),
        (TRACE + "localhost:80 is http.  Version: |a|b|c|", None),
        ("  " + TRACE + "127.0.0.1:80 is http.  Version: |a|b|c|", None),
    ],
)
def test_it_reads_the_ports_nmap_names_from_its_trace(line, expected):
    assert nmap.parse_trace_line(line) == expected


def test_no_trace_line_breaks_the_reader_or_names_a_port_it_does_not_say():
    # Lines built from the trace's own pieces, cut and shuffled: parse_trace_line never
    # raises, and any port it returns is one the line really begins with.
    rng = random.Random(24)
    pieces = [
        "Service scan ", "hard ", "soft ", "match ", "(Probe GetRequest ", "matched with ",
        "NULL line 3", "): ", "127.0.0.1", "::1", ":", "80", "65535", "0", " is ", "SSL/",
        "http", "ssl", ".  Version: ", "|", "nginx", "1.2", "()", "\x00", "é", " ",
    ]  # fmt: skip
    for _ in range(20000):
        line = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 25)))
        finding = nmap.parse_trace_line(line)
        if finding is not None:
            assert line.startswith("Service scan ")
            assert f"{finding.ip}:{finding.port} is " in line
            assert 1 <= finding.port <= 65535 and finding.service


@pytest.mark.process
def test_a_failing_nmap_keeps_what_it_named_and_says_why_past_its_trace(tmp_path, monkeypatch):
    fake = tmp_path / "nmap"
    fake.write_text(
        "#!/bin/sh\n"
        f"echo '{TRACE}127.0.0.1:22 is ssh.  Version: |OpenSSH|9.2p1||'\n"
        "echo 'Unable to split netmask from target expression' >&2\n"
        "echo 'NSOCK INFO [0.2s] nsock_iod_delete(): nsock_iod_delete (IOD #1)' >&2\n"
        "exit 1\n"
    )
    fake.chmod(0o755)
    monkeypatch.setattr(nmap.shutil, "which", lambda name: str(fake))

    results = nmap.fingerprint_many(
        hosts={"127.0.0.1": [22, 80]}, options=nmap.FingerprintOptions(timeout=10)
    )

    result = results["127.0.0.1"]
    assert result.status == "unknown"
    assert result.error == "nmap failed: Unable to split netmask from target expression"
    assert [(f.port, f.product) for f in result.findings] == [(22, "OpenSSH")]


@pytest.mark.process
def test_it_reports_a_host_that_times_out_as_unknown_not_closed(services):
    # A port that accepts but never speaks keeps -sV busy past a 2 s host timeout.
    silent = services.start("silent", "127.0.0.5")

    result = nmap.fingerprint(
        ip="127.0.0.5", ports=[silent], options=nmap.FingerprintOptions(timeout=2)
    )

    assert result.status == "unknown"
    assert result.findings == []
    assert "timeout" in result.error


@pytest.mark.process
def test_it_reports_unknown_when_nmap_itself_is_killed_by_our_timeout(services, monkeypatch):
    silent = services.start("silent", "127.0.0.5")
    monkeypatch.setattr(nmap, "PROCESS_MARGIN", -28.0)  # process limit 2 s < host timeout 30 s

    result = nmap.fingerprint(
        ip="127.0.0.5", ports=[silent], options=nmap.FingerprintOptions(timeout=30)
    )

    assert result.status == "unknown"
    assert "did not finish" in result.error


@pytest.mark.parametrize(
    "ip", ["1.2.3.4,--script,x", "-oN/tmp/x", ";id", "127.0.0.1 --script x", "localhost", 7]
)
def test_it_refuses_anything_but_an_ip_address(ip):
    with pytest.raises(EngineError):
        nmap.build_argv(ip=ip, ports=[22], timeout=10)


@pytest.mark.parametrize(
    "options",
    [
        {"ports": "22"},
        {"ports": [0]},
        {"ports": [70000]},
        {"ports": []},
        {"ports": ["22"]},
        {"intensity": 10},
        {"proto": "sctp"},
        {"timeout": 0},
    ],
)
def test_it_refuses_bad_ports_and_options(options):
    kwargs = {"ip": "127.0.0.1", "ports": [22], "timeout": 10, **options}
    with pytest.raises(EngineError):
        nmap.build_argv(**kwargs)


def test_it_refuses_mixed_ip_versions_in_one_run():
    with pytest.raises(EngineError, match="IPv4 or IPv6"):
        nmap.build_argv(ips=["127.0.0.1", "::1"], ports=[22], timeout=10)
    with pytest.raises(EngineError):
        nmap.build_argv(ips=["127.0.0.1", "-oN/tmp/x"], ports=[22], timeout=10)


def test_it_batches_no_more_ports_than_one_run_probes_at_once():
    hosts = {"198.18.0.1": list(range(1, 601)), "198.18.0.2": [22, 80], "198.18.0.3": [22]}

    groups = nmap.batches(hosts, max_services=256)

    assert all(sum(map(len, g.values())) <= 256 for g in groups)
    asked = sorted((ip, p) for g in groups for ip, ports in g.items() for p in ports)
    assert asked == sorted((ip, p) for ip, ports in hosts.items() for p in ports)
    assert [len(g["198.18.0.1"]) for g in groups if "198.18.0.1" in g] == [256, 256, 88]


def test_it_raises_nmaps_parallelism_to_every_port_of_the_run_and_traces_to_stdout():
    xml = Path("/tmp/portmon-nmap-x/report.xml")

    argv = nmap.build_argv(ip="127.0.0.1", ports=[22], timeout=9, parallelism=64, xml_path=xml)

    assert argv[argv.index("--min-parallelism") + 1] == "64"
    assert argv[argv.index("-oX") + 1] == str(xml) and "--version-trace" in argv
    assert argv[-2:] == ["--", "127.0.0.1"]
    # At or below nmap's own 20 nothing is raised; the old stdout XML without a path.
    argv = nmap.build_argv(ip="127.0.0.1", ports=[22], timeout=9, parallelism=20)
    assert "--min-parallelism" not in argv and argv[argv.index("-oX") + 1] == "-"


@pytest.mark.parametrize(
    "options",
    [
        {"parallelism": 0},
        {"parallelism": 257},
        {"parallelism": "64"},
        {"xml_path": "/tmp/x.xml"},
        {"xml_path": Path("x.xml")},
        {"xml_path": Path("/tmp/../etc/x.xml")},
    ],
)
def test_it_refuses_a_bad_parallelism_or_report_path(options):
    with pytest.raises(EngineError):
        nmap.build_argv(ip="127.0.0.1", ports=[22], timeout=10, **options)


def test_it_puts_several_targets_after_end_of_options_in_one_host_group():
    argv = nmap.build_argv(ips=["198.18.0.2", "198.18.0.1", "198.18.0.2"], ports=[80], timeout=9)

    assert argv[-3:] == ["--", "198.18.0.2", "198.18.0.1"]
    assert argv[argv.index("--min-hostgroup") + 1] == "2"


def test_it_builds_a_command_line_with_the_target_after_end_of_options():
    argv = nmap.build_argv(ip="::1", ports=[443, 22, 23, 24, 22], timeout=30, intensity=5)

    assert argv[-2:] == ["--", "::1"]
    assert "-6" in argv and "-sV" in argv and "-Pn" in argv and "-n" in argv
    assert argv[argv.index("-p") + 1] == "22-24,443"
    assert argv[argv.index("--host-timeout") + 1] == "30000ms"
    assert argv[argv.index("--version-intensity") + 1] == "5"
    assert argv[argv.index("-oX") + 1] == "-"


def test_it_parses_open_ports_with_service_product_version_and_cpe():
    hosts = nmap.parse_xml((DATA / "nmap-loopback.xml").read_text())

    assert [(h.ip, h.status) for h in hosts] == [("127.0.0.3", "up")]
    assert hosts[0].findings == [
        Finding(
            "127.0.0.3",
            2222,
            "tcp",
            "ssh",
            "OpenSSH",
            "9.2p1 Debian 2+deb12u3",
            "protocol 2.0",
            "cpe:/a:openbsd:openssh:9.2p1 cpe:/o:linux:linux_kernel",
        ),
        Finding("127.0.0.3", 8080, "tcp", "http", "nginx", "1.22.1", "", NGINX_CPE),
    ]


def test_it_parses_a_timed_out_host_as_unknown():
    hosts = nmap.parse_xml((DATA / "nmap-timedout.xml").read_text())

    assert [(h.ip, h.status, h.findings) for h in hosts] == [("127.0.0.3", "unknown", [])]


def test_it_parses_ipv6_reports():
    hosts = nmap.parse_xml((DATA / "nmap-ipv6.xml").read_text())

    assert hosts[0].ip == "::1" and {f.port for f in hosts[0].findings} == {2222, 8080}


def test_it_parses_lab_services_from_a_real_lab_scan():
    hosts = nmap.parse_xml((DATA / "nmap-lab.xml").read_text())

    assert [(f.port, f.service, f.product) for f in hosts[0].findings] == [
        (25, "smtp", "Postfix smtpd"),
        (587, "smtp", "Postfix smtpd"),
        (13590, "mysql", "MySQL"),
    ]


def test_it_keeps_the_finished_hosts_of_a_report_cut_short():
    text = (DATA / "nmap-loopback.xml").read_text()
    cut = text[: text.index("<runstats>") + 5]

    hosts = nmap.parse_xml(cut)

    assert {f.port for f in hosts[0].findings} == {2222, 8080}


def test_it_merges_a_tunnel_into_the_service_name():
    text = (
        (DATA / "nmap-loopback.xml")
        .read_text()
        .replace('name="http" product="nginx"', 'name="http" tunnel="ssl" product="nginx"')
    )

    hosts = nmap.parse_xml(text)

    assert {f.port: f.service for f in hosts[0].findings}[8080] == "ssl/http"


@pytest.mark.parametrize("text", ["", "hello", "<nmaprun><host>", '{"ip": "1.2.3.4"}'])
def test_it_rejects_text_that_is_not_an_nmap_report(text):
    with pytest.raises(EngineError):
        nmap.parse_xml(text)


@pytest.mark.process
def test_a_shorter_null_probe_wait_names_a_waiting_service_sooner(services):
    # An HTTP server on an odd port says nothing until asked: with nmap's own file it is
    # named only after the 6 s NULL probe; with a 2 s wait, 4 s sooner.
    http = services.start("http", "127.0.0.8")
    named_at = {}
    for wait in (6000, 2000):
        started = time.monotonic()
        results = nmap.fingerprint_many(
            hosts={"127.0.0.8": [http]},
            options=nmap.FingerprintOptions(timeout=30, null_wait_ms=wait),
        )
        named_at[wait] = time.monotonic() - started
        assert [fields(f) for f in results["127.0.0.8"].findings] == [NGINX]
    assert named_at[6000] >= 5.5
    assert named_at[2000] < 4.5


@pytest.mark.process
def test_a_banner_later_than_the_null_wait_is_still_named_on_the_next_probe(services):
    # Adversarial: an SSH server that sends its banner 3 s after the connection, past the
    # 2 s NULL and GenericLines waits. nmap's next probe (GetRequest, 5 s) gets it and falls
    # back to the NULL probe's match lines: same name, version and CPE as from a prompt banner.
    async def late_ssh(reader, writer):
        with contextlib.suppress(Exception):
            await asyncio.sleep(3)
            writer.write(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")
            await writer.drain()
            await asyncio.wait_for(reader.read(256), 10)
        writer.close()

    port = services.start(late_ssh, "127.0.0.8")
    result = nmap.fingerprint_many(
        hosts={"127.0.0.8": [port]},
        options=nmap.FingerprintOptions(timeout=30, null_wait_ms=2000, generic_lines_wait_ms=2000),
    )
    (finding,) = result["127.0.0.8"].findings
    assert fields(finding) == OPENSSH
    assert finding.cpe.startswith("cpe:/a:openbsd:openssh:9.2p1")


@pytest.mark.process
def test_a_service_that_ignores_empty_lines_is_named_sooner_with_a_short_generic_lines_wait(
    services,
):
    # redis on an odd port answers neither the NULL probe nor two empty lines: it waits out
    # both waits before GetRequest names it (measured 8.2 s at 2000 + 5000, 5.1 s at 2000 +
    # 2000).
    port = services.start(handle_redis, "127.0.0.8")
    named_at = {}
    for generic in (5000, 2000):
        started = time.monotonic()
        results = nmap.fingerprint_many(
            hosts={"127.0.0.8": [port]},
            options=nmap.FingerprintOptions(
                timeout=30, null_wait_ms=2000, generic_lines_wait_ms=generic
            ),
        )
        named_at[generic] = time.monotonic() - started
        (finding,) = results["127.0.0.8"].findings
        assert (finding.service, finding.product) == ("redis", "Redis key-value store")
    assert named_at[5000] >= 7.0
    assert named_at[2000] <= named_at[5000] - 2.5


@pytest.mark.process
def test_a_service_that_answers_empty_lines_late_is_still_named_by_the_next_probe(services):
    # Adversarial: an HTTP server that answers every request 3 s late, past the 2 s
    # GenericLines wait. nmap gives up on that probe's answer; GetRequest, which keeps
    # nmap's 5 s, gets the same server's answer and names it as nmap's own waits do.
    async def late_http(reader, writer):
        with contextlib.suppress(Exception):
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            await asyncio.sleep(3)
            writer.write(HTTP_REPLY)
            await writer.drain()
        writer.close()

    port = services.start(late_http, "127.0.0.8")
    result = nmap.fingerprint_many(
        hosts={"127.0.0.8": [port]},
        options=nmap.FingerprintOptions(timeout=30, null_wait_ms=2000, generic_lines_wait_ms=2000),
    )
    (finding,) = result["127.0.0.8"].findings
    assert fields(finding) == NGINX


def test_the_probe_file_changes_the_two_waits_only(tmp_path):
    source = nmap_probes.source_file()
    assert source is not None
    original = source.read_text(encoding="latin-1").splitlines()
    changed = nmap_probes.with_waits("\n".join(original), SHORT_WAITS).splitlines()
    # NULL's own line is rewritten; GenericLines, which takes nmap's default, gets one.
    assert [line for line in changed if line not in original] == ["totalwaitms 2000"] * 2
    assert [line for line in original if line not in changed] == ["totalwaitms 6000"]
    generic = changed.index("Probe TCP GenericLines q|\\r\\n\\r\\n|")
    assert changed[generic + 1] == "totalwaitms 2000"
    assert len(changed) == len(original) + 1
    with pytest.raises(ValueError):
        nmap_probes.with_waits("Probe TCP NULL q||\nmatch ssh m|^SSH|\n", {"NULL": 1500})
    with pytest.raises(ValueError):
        nmap_probes.with_waits("\n".join(original), {"GetRequest": 1000})
    folder = nmap_probes.datadir(SHORT_WAITS)
    assert (
        folder is not None
        and (folder / "nmap-service-probes").read_text(encoding="latin-1").splitlines() == changed
    )
    assert folder.stat().st_mode & 0o077 == 0 and folder.parent.stat().st_mode & 0o022 == 0
    # nmap's own waits: nmap's own file, no --datadir
    assert nmap_probes.datadir({"NULL": 6000, "GenericLines": 5000}) is None
    assert nmap_probes.datadir({}) is None
    argv = nmap.build_argv(ip="127.0.0.1", ports=[22], timeout=9, datadir=folder)
    assert argv[argv.index("--datadir") + 1] == str(folder)
    with pytest.raises(EngineError):
        nmap.build_argv(ip="127.0.0.1", ports=[22], timeout=9, datadir=Path("rel"))
