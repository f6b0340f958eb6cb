"""run_process: lines streamed, timeouts enforced, and no process left behind, whatever happens."""

import ipaddress
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from scanner.engines.base import (
    EngineError,
    EngineTimeout,
    check_ports,
    check_targets,
    format_ports,
    run_process,
)

PY = sys.executable
# A process that starts a grandchild in the same group, prints both pids, then sleeps.
SPAWNER = textwrap.dedent(
    """
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    print(f"pids {child.pid}", flush=True)
    time.sleep(120)
    """
)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def wait_dead(pid: int, seconds: float = 5.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.process
def test_it_streams_lines_split_on_carriage_returns_and_newlines():
    lines = []
    result = run_process(
        [PY, "-c", "import sys; sys.stderr.write('rate: 1%\\rrate: 2%\\r'); print('a\\nb')"],
        timeout=20,
        on_line=lambda stream, line: lines.append((stream, line)),
    )
    assert result.returncode == 0
    assert ("stderr", "rate: 1%") in lines and ("stderr", "rate: 2%") in lines
    assert [line for stream, line in lines if stream == "stdout"] == ["a", "b"]
    assert result.stdout == "a\nb\n"


@pytest.mark.process
def test_it_kills_the_whole_process_group_on_timeout():
    seen = []
    started = time.monotonic()
    with pytest.raises(EngineTimeout) as info:
        run_process([PY, "-c", SPAWNER], timeout=2, on_line=lambda s, line: seen.append(line))
    assert time.monotonic() - started < 10
    grandchild = int(seen[0].split()[1])
    assert wait_dead(grandchild), "grandchild survived the timeout"
    assert "pids" in info.value.partial.stdout


@pytest.mark.process
def test_it_kills_the_group_when_the_caller_is_interrupted():
    # KeyboardInterrupt stands for Celery's SoftTimeLimitExceeded or any exception in a
    # callback: run_process must not leave the tool running while the exception goes on.
    pids = []

    def interrupt(stream, line):
        pids.append(int(line.split()[1]))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_process([PY, "-c", SPAWNER], timeout=60, on_line=interrupt)
    assert wait_dead(pids[0])


@pytest.mark.process
def test_it_kills_the_tool_when_the_worker_is_sigkilled():
    # The worker (a Python process running run_process) dies without any cleanup; the
    # kernel must kill the tool through PR_SET_PDEATHSIG.
    worker_code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {os.getcwd()!r})
        from scanner.engines.base import run_process
        run_process([sys.executable, "-c", "import os, time; print(os.getpid(), flush=True);"
                      " time.sleep(120)"], timeout=120,
                     on_line=lambda s, line: print("tool", line, flush=True))
        """
    )
    worker = subprocess.Popen([PY, "-c", worker_code], stdout=subprocess.PIPE, text=True)
    try:
        line = worker.stdout.readline()
        tool_pid = int(line.split()[1])
        assert alive(tool_pid)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        assert wait_dead(tool_pid), "the tool outlived its SIGKILLed worker"
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        worker.stdout.close()


@pytest.mark.process
def test_it_reports_a_missing_program_as_an_engine_error():
    with pytest.raises(EngineError, match="cannot start"):
        run_process(["/nonexistent/masscan"], timeout=5)


def test_it_refuses_a_command_line_that_is_not_a_list_of_strings():
    with pytest.raises(EngineError):
        run_process("masscan -p1 1.2.3.4", timeout=5)  # a string would be a shell habit
    with pytest.raises(EngineError):
        run_process(["echo", 1], timeout=5)


@pytest.mark.parametrize(
    "bad",
    ["1.2.3.4,--script,x", "-oN/tmp/x", ";id", "127.0.0.1", b"127.0.0.1", 2130706433, None],
)
def test_it_refuses_targets_that_are_not_validated_ipaddress_objects(bad):
    with pytest.raises(EngineError):
        check_targets([bad])
    with pytest.raises(EngineError):
        check_targets(bad)


def test_it_refuses_ipv6_addresses_with_an_interface_scope():
    with pytest.raises(EngineError, match="scope"):
        check_targets([ipaddress.ip_address("fe80::1%eth0")])


@pytest.mark.parametrize(
    "bad", ["1-65535", [(0, 10)], [(1, 65536)], [(10, 5)], [("1", "2")], [(True, 2)], [(1,)], []]
)
def test_it_refuses_port_ranges_outside_1_65535(bad):
    with pytest.raises(EngineError):
        check_ports(bad)


def test_it_formats_merged_port_ranges():
    assert format_ports([(80, 80), (1, 10), (5, 20), (21, 22), (443, 443)]) == "1-22,80,443"


@pytest.mark.process
def test_it_hands_stdout_over_in_raw_chunks_when_asked_and_keeps_none_of_it():
    chunks: list[bytes] = []
    lines = []
    script = "import sys\nfor i in range(20000): print(f'Discovered closed port {i}/tcp on x')"
    result = run_process(
        [PY, "-c", script],
        timeout=30,
        on_stdout=chunks.append,
        on_line=lambda stream, line: lines.append((stream, line)),
    )

    assert result.returncode == 0 and result.stdout == ""
    assert chunks[-1] == b""  # the end of output is announced once
    text = b"".join(chunks).decode()
    assert text.count("\n") == 20000 and text.endswith("port 19999/tcp on x\n")
    assert lines == []  # stdout did not also go through the line splitter


@pytest.mark.process
def test_it_can_run_a_tool_at_a_lower_cpu_priority():
    ours = os.nice(0)
    result = run_process([PY, "-c", "import os; print(os.nice(0))"], timeout=20, nice=7)

    assert int(result.stdout) == min(ours + 7, 19)
    with pytest.raises(EngineError, match="nice"):
        run_process([PY, "-c", "pass"], timeout=20, nice=-5)
