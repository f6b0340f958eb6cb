"""deploy/: the systemd units pass `systemd-analyze verify` and keep least privilege."""

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
# The host agent runs on monitored servers, not on Portmon's nodes: its own checks below.
AGENT_UNIT = "portmon-agent.service"
UNITS = sorted(p.name for p in DEPLOY.glob("*.service") if p.name != AGENT_UNIT)
# The template runs once per zone queue; verify both instances the guide tells to enable.
INSTANCES = [u for u in UNITS if "@" not in u] + [
    "portmon-sweep@sweep.internal.service",
    "portmon-sweep@sweep.external.service",
    AGENT_UNIT,
]


def verify(unit_dir: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """systemd-analyze verify on a throwaway root holding the units and the venv's python.

    verify checks that ExecStart's binary exists; --root keeps /opt/portmon imaginary, and
    the distribution's own units (sysinit.target, ...) are copied in for the dependencies.
    """
    binary = shutil.which("systemd-analyze")
    assert binary, "systemd-analyze is missing: apt-get install systemd (.ci/run does)"
    root = tmp_path / "root"
    for binary_path in ("opt/portmon/.venv/bin/python", "opt/portmon-agent/venv/bin/python"):
        python = root / binary_path
        python.parent.mkdir(parents=True)
        python.write_text("#!/bin/sh\n")
        python.chmod(0o755)
    (root / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    shutil.copytree(unit_dir, root / "etc/systemd/system")
    return subprocess.run(
        [binary, "verify", f"--root={root}", *INSTANCES],
        capture_output=True,
        text=True,
        timeout=120,
    )


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(DEPLOY / name)
    return parser


def test_it_ships_the_four_units():
    assert UNITS == [
        "portmon-beat.service",
        "portmon-sweep@.service",
        "portmon-web.service",
        "portmon-worker.service",
    ]


@pytest.mark.process
def test_it_passes_systemd_analyze_verify(tmp_path):
    result = verify(DEPLOY, tmp_path)

    # verify exits 0 on settings it ignores, so any message about our units is a failure.
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


@pytest.mark.process
def test_it_would_notice_a_broken_unit(tmp_path):
    broken = tmp_path / "units"
    shutil.copytree(DEPLOY, broken)
    path = broken / "portmon-web.service"
    path.write_text(path.read_text().replace("LimitNOFILE=65536", "LimitNOFILE=lots"))

    result = verify(broken, tmp_path)

    assert "portmon-web.service" in result.stderr and "lots" in result.stderr


@pytest.mark.parametrize("name", UNITS)
def test_it_runs_every_unit_as_portmon_with_the_env_file_and_hardening(name):
    service = unit(name)["Service"]

    assert service["User"] == "portmon"
    assert service["EnvironmentFile"] == "/etc/portmon/portmon.env"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["ReadWritePaths"] == "/var/lib/portmon"
    assert service["PrivateTmp"] == "yes"
    assert service["Restart"] == "on-failure"
    assert "LimitNOFILE" in service and "MemoryMax" in service and "TasksMax" in service


@pytest.mark.parametrize("name", UNITS)
def test_it_gives_cap_net_raw_to_the_sweep_worker_only(name):
    service = unit(name)["Service"]
    expected = "CAP_NET_RAW" if name == "portmon-sweep@.service" else ""

    assert service["AmbientCapabilities"] == expected
    assert service["CapabilityBoundingSet"] == expected


def test_it_runs_one_sweep_per_node_on_the_instance_queue():
    exec_start = unit("portmon-sweep@.service")["Service"]["ExecStart"]

    assert "--queues %i " in exec_start and "--concurrency 1 " in exec_start


def test_it_runs_the_host_agent_unprivileged_with_only_the_capabilities_to_read_proc():
    service = unit(AGENT_UNIT)["Service"]

    assert service["User"] == "portmon-agent"
    assert service["AmbientCapabilities"] == "CAP_SYS_PTRACE CAP_DAC_READ_SEARCH"
    assert service["CapabilityBoundingSet"] == service["AmbientCapabilities"]
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert service["ReadWritePaths"] == "/var/lib/portmon-agent"
    assert "--token-file /etc/portmon-agent/token" in service["ExecStart"]
