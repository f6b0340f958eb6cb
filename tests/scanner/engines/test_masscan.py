"""masscan: command line from validated values only, robust JSON parsing, live progress."""

import ipaddress
import json
import time

import pytest

from scanner.engines import EngineError, masscan, routes
from scanner.engines.options import MasscanOptions
from scanner.findings import Finding
from tests.scanner.engines.conftest import DATA, masscan_args

OUT = "/tmp/portmon-test/out.json"


KNOBS = ("rate", "retries", "wait", "interface", "source_ip", "router_mac")


def argv_for(**overrides):
    """build_argv's command line; rate, retries, wait, ... go into its MasscanOptions."""
    knobs = {"rate": 1000, **{k: overrides.pop(k) for k in KNOBS if k in overrides}}
    kwargs = {
        "targets": [ipaddress.ip_network("198.18.7.0/24")],
        "ports": [(1, 65535)],
        "output_path": OUT,
        **overrides,
    }
    return masscan.build_argv(options=MasscanOptions(**knobs), **kwargs)


def test_it_builds_the_command_line_from_validated_values():
    argv = argv_for(
        targets=[ipaddress.ip_network("198.18.7.0/24"), ipaddress.ip_address("198.18.9.4")],
        ports=[(1, 1024), (8080, 8080), (1000, 2000)],
        exclude_path="/tmp/portmon-test/exclude.txt",
        retries=2,
        interface="pmlab7",
        source_ip="198.19.7.1",
        router_mac="62:1a:93:e3:fe:a5",
        wait=5,
    )

    assert argv[0].endswith("masscan")
    pairs = dict(zip(argv[1::2], argv[2::2], strict=True))
    assert pairs["-p"] == "1-2000,8080"
    assert pairs["--rate"] == "1000" and pairs["--retries"] == "2" and pairs["--wait"] == "5"
    assert pairs["-oJ"] == OUT and pairs["--excludefile"] == "/tmp/portmon-test/exclude.txt"
    assert pairs["--adapter"] == "pmlab7" and pairs["--adapter-ip"] == "198.19.7.1"
    assert pairs["--router-mac"] == "62-1a-93-e3-fe-a5"
    assert argv[-4:] == ["--range", "198.18.7.0/24", "--range", "198.18.9.4"]


def test_it_asks_masscan_to_print_hits_as_they_come_only_when_streaming():
    assert "--interactive" not in argv_for()
    assert argv_for(stream=True)[-3] == "--interactive"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("Discovered open port 3306/tcp on 198.18.1.140", Finding("198.18.1.140", 3306)),
        ("Discovered open port 53/udp on 198.18.1.2  ", Finding("198.18.1.2", 53, "udp")),
        ("Discovered open port 22/tcp on -oN/tmp/x", None),
        ("Discovered open port 0/tcp on 198.18.1.2", None),
        ("rate:  0.00-kpps, 100.00% done, waiting 0-secs, found=10", None),
    ],
)
def test_it_reads_streamed_hits(line, expected):
    hits = []
    reader = masscan.AnswerReader(on_hit=hits.append)
    reader(line.encode() + b"\n")
    reader(b"")
    assert hits == ([expected] if expected else [])


def test_the_answer_reader_streams_hits_and_every_answer_whatever_the_chunking():
    output = (
        b"Discovered open port 22/tcp on 198.18.7.2                                 \n"
        b"Discovered closed port 1094/tcp on 198.18.7.2                             \n"
        b"Discovered closed port 53/udp on 198.18.7.3\n"
        b"Discovered open port 22/tcp on -oN/tmp/x\n"
        b"Discovered open port 0/tcp on 198.18.7.3\n"
        b"Discovered closed port 65535/tcp on 198.18.7.3"  # no newline: the output's end
    )
    expected_answers = [("198.18.7.2", 22), ("198.18.7.2", 1094), ("198.18.7.3", 0),
                        ("198.18.7.3", 65535)]  # fmt: skip
    for size in (1, 7, 64, len(output)):
        hits, answers = [], []
        reader = masscan.AnswerReader(on_hit=hits.append, on_answers=answers.extend)
        for start in range(0, len(output), size):
            reader(output[start : start + size])
        reader(b"")

        assert hits == [Finding("198.18.7.2", 22)]  # port 0 and a non-address are no hits
        # Answers are only counted (the ledger ignores what it did not probe).
        assert answers == expected_answers


@pytest.mark.parametrize(
    "target", ["1.2.3.4,--script,x", "-oN/tmp/x", ";id", "198.18.7.1", 3323070209, None]
)
def test_it_refuses_targets_that_are_not_ipaddress_objects(target):
    with pytest.raises(EngineError):
        argv_for(targets=[target])


@pytest.mark.parametrize(
    "overrides",
    [
        {"targets": [ipaddress.ip_address("::1")]},
        {"ports": "1-65535"},
        {"ports": [(0, 80)]},
        {"rate": 0},
        {"rate": "1000"},
        {"rate": 10**9},
        {"retries": 11},
        {"wait": -1},
        {"interface": "-oN/tmp/x"},
        {"interface": "eth0;id"},
        {"interface": "a" * 16},
        {"source_ip": "1.2.3.4,--script,x"},
        {"source_ip": "::1"},
        {"router_mac": "--echo"},
        {"router_mac": "00:11:22:33:44"},
        {"output_path": "-oN/tmp/x"},
        {"exclude_path": "relative/path"},
    ],
)
def test_it_refuses_bad_options(overrides):
    with pytest.raises(EngineError):
        argv_for(**overrides)


def test_it_refuses_exclusions_that_are_not_networks():
    with pytest.raises(EngineError):
        masscan.sweep(
            *masscan_args(
                targets=[ipaddress.ip_network("198.18.7.0/24")],
                ports=[(1, 10)],
                rate=100,
                exclude=["198.18.7.5"],
                timeout=5,
            )
        )


def lab_findings():
    truth = json.loads((DATA / "masscan-lab-truth.json").read_text())
    return {Finding(ip, int(port)) for ip, ports in truth.items() for port in ports}


def test_it_parses_real_masscan_json_and_merges_duplicate_replies():
    text = (DATA / "masscan-lab.json").read_text()
    assert text.count('"ip"') > 14  # masscan --retries reports some ports twice

    found = masscan.parse_json(text)

    assert set(found) == lab_findings()
    assert len(found) == 14


def test_it_parses_old_masscan_json_with_trailing_comma_and_finished_record():
    text = (
        '[\n{ "ip": "198.18.7.2", "timestamp": "1", "ports": [ {"port": 22, "proto": "tcp",'
        ' "status": "open", "reason": "syn-ack", "ttl": 64} ] },\n'
        '{ "ip": "198.18.7.3", "timestamp": "1", "ports": [ {"port": 80, "proto": "tcp",'
        ' "service": {"name": "http", "banner": "nginx"} } ] },\n'
        '{ "ip": "198.18.7.3", "timestamp": "1", "ports": [ {"port": 81, "proto": "tcp",'
        ' "status": "closed"} ] },\n'
        "{finished: 1}\n]\n"
    ).replace("{finished: 1}", '{"finished": 1}')

    assert masscan.parse_json(text) == [Finding("198.18.7.2", 22), Finding("198.18.7.3", 80)]


def test_it_keeps_the_complete_records_of_a_file_cut_short():
    text = (DATA / "masscan-lab.json").read_text()
    cut = text[: len(text) // 2]

    found = masscan.parse_json(cut)

    assert found and set(found) <= lab_findings()


def test_it_reads_an_empty_scan():
    assert masscan.parse_json("") == []
    assert masscan.parse_json("[\n]\n") == []


@pytest.mark.parametrize(
    "text", ["<nmaprun/>", "hello", '[\n{"broken": ]\n,\n{"ip": "198.18.7.2"}\n]']
)
def test_it_rejects_text_that_is_not_masscan_json(text):
    with pytest.raises(EngineError):
        masscan.parse_json(text)


def test_it_skips_records_with_invalid_addresses_or_ports():
    text = (
        '[{"ip": "1.2.3.4,--script,x", "ports": [{"port": 22, "proto": "tcp", "status": "open"}]},'
        '{"ip": "198.18.7.2", "ports": [{"port": 70000, "proto": "tcp", "status": "open"},'
        ' {"port": "22", "proto": "tcp", "status": "open"}]}]'
    )

    assert masscan.parse_json(text) == []


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("rate: 19.95-kpps,  2.83% done,   0:03:29 remaining, found=2       ", (2.83, 2)),
        ("rate:  0.00-kpps, 100.00% done, waiting 2-secs, found=14       ", (100.0, 14)),
        ("rate:  0.10-kpps, 42.00%-done, found=7", (42.0, 7)),
    ],
)
def test_it_reads_progress_from_masscan_status_lines(line, expected):
    match = masscan._STATUS.search(line)
    assert (float(match.group(1)), int(match.group(2))) == expected


# A stand-in for masscan 1.3.2 stuck after its --wait (robertdavidgraham/masscan#144): it
# writes its hits, then prints "waiting -N-secs" forever. Like masscan it exits on the third
# SIGINT (or, with --ignore-sigint here, never).
FAKE_MASSCAN = r"""#!/usr/bin/env python3
import signal, sys, time
args = sys.argv[1:]
out = args[args.index("-oJ") + 1]
stubborn = "198.18.7.99" in args
with open(out, "w") as fh:
    fh.write('[\n{"ip": "198.18.7.2", "timestamp": "1", "ports": [{"port": 22, "proto": "tcp",'
             ' "status": "open", "reason": "syn-ack", "ttl": 64}]}\n,\n')
buffered = open(out, "a")  # never flushed: what a SIGKILL loses
buffered.write('{"ip": "198.18.7.3", "timestamp": "1", "ports": [{"port": 80, "proto": "tcp",'
               ' "status": "open", "reason": "syn-ack", "ttl": 64}]}\n')
print("Discovered open port 22/tcp on 198.18.7.2", flush=True)
print("Discovered open port 80/tcp on 198.18.7.3", flush=True)
sigints = [0]
def on_sigint(signum, frame):
    sigints[0] += 1
    if sigints[0] >= 3:
        buffered.close()
        sys.exit(1)
signal.signal(signal.SIGINT, signal.SIG_IGN if stubborn else on_sigint)
sys.stderr.write("rate:  1.00-kpps, 50.00% done,   0:00:01 remaining, found=2       \r")
wait = 1
while True:
    sys.stderr.write(f"rate:  0.00-kpps, 100.00% done, waiting {wait}-secs, found=3       \r")
    sys.stderr.flush()
    time.sleep(0.25)
    wait -= 1
"""


def one_route(targets, **_overrides):
    """routes.plan as if every target left by one gateway (the root namespace blackholes
    198.18.0.0/15: the real plan would refuse these fake targets)."""
    networks = tuple(ipaddress.ip_network(t) for t in targets)
    egress = routes.Egress(
        interface="pmtest0",
        source_ip=ipaddress.ip_address("198.19.7.1"),
        gateway=ipaddress.ip_address("198.19.7.2"),
        router_mac="02:00:00:00:07:02",
        targets=networks,
    )
    return routes.SweepPlan(masscan=[egress])


@pytest.fixture
def fake_masscan(tmp_path, monkeypatch):
    path = tmp_path / "masscan"
    path.write_text(FAKE_MASSCAN)
    path.chmod(0o755)
    monkeypatch.setattr(masscan.shutil, "which", lambda name: str(path))
    monkeypatch.setattr(masscan.routes, "plan", one_route)
    return path


@pytest.mark.process
def test_it_stops_a_masscan_stuck_after_its_wait_and_keeps_its_results(fake_masscan):
    progress, streamed = [], []
    started = time.monotonic()

    found = masscan.sweep(
        *masscan_args(
            targets=[ipaddress.ip_network("198.18.7.0/24")],
            ports=[(1, 100)],
            rate=100,
            timeout=30,
            on_progress=lambda percent, count: progress.append((percent, count)),
            on_finding=streamed.append,
        )
    )

    assert time.monotonic() - started < 10
    assert found == [Finding("198.18.7.2", 22), Finding("198.18.7.3", 80)]
    assert streamed == found
    assert progress[0][0] == 50.0 and progress[-1] == (100.0, 2)


@pytest.mark.process
def test_it_kills_a_masscan_that_ignores_sigint_and_keeps_what_it_printed(fake_masscan):
    found = masscan.sweep(
        *masscan_args(
            targets=[ipaddress.ip_address("198.18.7.99")], ports=[(1, 100)], rate=100, timeout=30
        )
    )

    # The JSON file lost its unflushed record; the streamed hit fills the gap.
    assert found == [Finding("198.18.7.2", 22), Finding("198.18.7.3", 80)]


@pytest.mark.process
def test_it_reports_masscan_errors_with_its_own_message(tmp_path, monkeypatch):
    path = tmp_path / "masscan"
    path.write_text("#!/bin/sh\necho 'FAIL: failed to detect router for interface' >&2\nexit 1\n")
    path.chmod(0o755)
    monkeypatch.setattr(masscan.shutil, "which", lambda name: str(path))
    monkeypatch.setattr(masscan.routes, "plan", one_route)

    with pytest.raises(EngineError, match="failed to detect router"):
        masscan.sweep(
            *masscan_args(
                targets=[ipaddress.ip_network("198.18.7.0/24")],
                ports=[(1, 10)],
                rate=100,
                timeout=10,
            )
        )


# Records its command line and reports one open port on the first address of its first range.
RECORDING_MASSCAN = r"""#!/usr/bin/env python3
import ipaddress, json, os, sys
args = sys.argv[1:]
with open(os.environ["PM_ARGV_LOG"], "a") as fh:
    fh.write(json.dumps(args) + "\n")
first = ipaddress.ip_network(args[args.index("--range") + 1]).network_address
port = args[args.index("-p") + 1]
print(f"Discovered open port {port}/tcp on {first}", flush=True)
"""


@pytest.mark.process
def test_it_runs_one_masscan_per_route_and_connect_scans_on_link_targets(
    tmp_path, monkeypatch, listeners
):
    path = tmp_path / "masscan"
    path.write_text(RECORDING_MASSCAN)
    path.chmod(0o755)
    log = tmp_path / "argv.log"
    monkeypatch.setenv("PM_ARGV_LOG", str(log))
    monkeypatch.setattr(masscan.shutil, "which", lambda name: str(path))
    port = listeners("127.0.0.1", 0).getsockname()[1]

    def egress(interface, source, gateway, mac, network):
        return routes.Egress(
            interface=interface,
            source_ip=ipaddress.ip_address(source),
            gateway=ipaddress.ip_address(gateway),
            router_mac=mac,
            targets=(ipaddress.ip_network(network),),
        )

    plan = routes.SweepPlan(
        masscan=[
            egress("pma0", "198.19.7.1", "198.19.7.2", "02:00:00:00:07:02", "198.18.7.0/24"),
            egress("pmb0", "198.19.8.1", "198.19.8.2", "02:00:00:00:08:02", "198.18.8.0/24"),
        ],
        # Loopback stands in for an on-link subnet: only the connect scanner may reach it.
        connect=[ipaddress.ip_network("127.0.0.1/32")],
    )
    monkeypatch.setattr(masscan.routes, "plan", lambda targets, **overrides: plan)
    progress, streamed = [], []

    found = masscan.sweep(
        *masscan_args(
            targets=[ipaddress.ip_network("198.18.7.0/24"), ipaddress.ip_network("198.18.8.0/24")],
            ports=[(port, port)],
            rate=100,
            timeout=30,
            wait=0,
            on_progress=lambda percent, count: progress.append((percent, count)),
            on_finding=streamed.append,
        )
    )

    runs = [json.loads(line) for line in log.read_text().splitlines()]
    wire = [
        (
            a[a.index("--adapter") + 1],
            a[a.index("--adapter-ip") + 1],
            a[a.index("--router-mac") + 1],
        )
        for a in runs
    ]
    assert wire == [
        ("pma0", "198.19.7.1", "02-00-00-00-07-02"),
        ("pmb0", "198.19.8.1", "02-00-00-00-08-02"),
    ]
    assert [a[a.index("--range") + 1] for a in runs] == ["198.18.7.0/24", "198.18.8.0/24"]
    assert not any("127.0.0.1" in " ".join(a) for a in runs)
    assert found == [
        Finding("127.0.0.1", port),
        Finding("198.18.7.0", port),
        Finding("198.18.8.0", port),
    ]
    assert sorted(streamed, key=lambda f: f.ip) == found
    percents = [p for p, _ in progress]
    assert percents == sorted(percents) and progress[-1] == (100.0, 3)


def test_it_connect_scans_on_link_targets_minus_the_exclusions(monkeypatch, listeners):
    port = listeners("127.0.0.1", 0).getsockname()[1]
    listeners("127.0.0.2", port)
    plan = routes.SweepPlan(connect=[ipaddress.ip_network("127.0.0.0/30")])
    monkeypatch.setattr(masscan.routes, "plan", lambda targets, **overrides: plan)

    found = masscan.sweep(
        *masscan_args(
            targets=[ipaddress.ip_network("127.0.0.0/30")],
            ports=[(port, port)],
            rate=100,
            exclude=[ipaddress.ip_network("127.0.0.2/32")],
            timeout=30,
        )
    )

    assert found == [Finding("127.0.0.1", port)]
