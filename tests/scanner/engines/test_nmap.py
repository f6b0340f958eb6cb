"""nmap fingerprints against real loopback services, and parsing of real nmap XML."""

import ipaddress

import pytest

from scanner.engines import EngineError, nmap
from scanner.findings import Finding
from tests.scanner.engines.conftest import DATA, free_port_block

OPENSSH = {"service": "ssh", "product": "OpenSSH", "version": "9.2p1 Debian 2+deb12u3"}
NGINX = {"service": "http", "product": "nginx", "version": "1.22.1"}
NGINX_CPE = "cpe:/a:igor_sysoev:nginx:1.22.1"


def fields(finding: Finding) -> dict:
    return {"service": finding.service, "product": finding.product, "version": finding.version}


def test_it_fingerprints_ssh_and_http_on_loopback(services):
    ssh = services.start("ssh", "127.0.0.4")
    http = services.start("http", "127.0.0.4")
    closed = free_port_block(1)

    result = nmap.fingerprint(ip="127.0.0.4", ports=[ssh, http, closed], timeout=60)

    assert result.status == "up" and result.ip == "127.0.0.4"
    by_port = {f.port: f for f in result.findings}
    assert set(by_port) == {ssh, http}  # the closed port is not a finding
    assert fields(by_port[ssh]) == OPENSSH
    assert by_port[ssh].extrainfo == "protocol 2.0"
    assert by_port[ssh].cpe.startswith("cpe:/a:openbsd:openssh:9.2p1")
    assert fields(by_port[http]) == NGINX


def test_it_fingerprints_over_ipv6(services):
    ssh = services.start("ssh", "::1")

    result = nmap.fingerprint(ip=ipaddress.ip_address("::1"), ports=[ssh], timeout=60)

    assert result.status == "up"
    assert [fields(f) for f in result.findings] == [OPENSSH]
    assert result.findings[0].ip == "::1"


def test_one_run_fingerprints_several_hosts_each_on_its_own_ports(services):
    ssh = services.start("ssh", "127.0.0.4")
    http = services.start("http", "127.0.0.6")
    services.start("ssh", "127.0.0.6", port=ssh)  # open, but not asked for on that host

    results = nmap.fingerprint_many(
        hosts={"127.0.0.4": [ssh], "127.0.0.6": [http], "127.0.0.7": [http]}, timeout=60
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


def test_it_reports_a_host_that_times_out_as_unknown_not_closed(services):
    # A port that accepts but never speaks keeps -sV busy past a 2 s host timeout.
    silent = services.start("silent", "127.0.0.5")

    result = nmap.fingerprint(ip="127.0.0.5", ports=[silent], timeout=2)

    assert result.status == "unknown"
    assert result.findings == []
    assert "timeout" in result.error


def test_it_reports_unknown_when_nmap_itself_is_killed_by_our_timeout(services, monkeypatch):
    silent = services.start("silent", "127.0.0.5")
    monkeypatch.setattr(nmap, "PROCESS_MARGIN", -28.0)  # process limit 2 s < host timeout 30 s

    result = nmap.fingerprint(ip="127.0.0.5", ports=[silent], timeout=30)

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
