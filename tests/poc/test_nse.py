"""nmap NSE for PoC checks: only allow-listed script names reach nmap's command line."""

import subprocess

import pytest

from scanner.engines import EngineError, nmap
from scanner.engines.base import run_process
from tests.alerts.notify.conftest import free_port


@pytest.mark.parametrize(
    "scripts",
    [["vuln"], ["ftp-brute"], ["redis-info", "http-shellshock"], ["/tmp/evil.nse"], "redis-info"],
)
def test_it_refuses_a_script_that_is_not_on_the_allowlist(scripts):
    with pytest.raises(EngineError):
        nmap.build_argv(ip="127.0.0.1", ports=[6379], timeout=30, scripts=scripts)


@pytest.mark.process
def test_it_runs_an_allowed_script_against_a_real_redis(tmp_path):
    port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.5", "--port", str(port), "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        argv = nmap.build_argv(ip="127.0.0.5", ports=[port], timeout=30, scripts=["redis-info"])
        assert argv[argv.index("--script") + 1] == "redis-info"
        assert argv.index("--script") < argv.index("--")
        result = run_process(argv, timeout=60)
    finally:
        redis.terminate()
        redis.wait(10)
    assert result.returncode == 0, result.stderr
    assert 'id="redis-info"' in result.stdout and "Version" in result.stdout
