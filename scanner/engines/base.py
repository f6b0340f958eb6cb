"""Shared plumbing for the engine adapters: errors, input checks and a leak-proof process runner."""

import ctypes
import fcntl
import ipaddress
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

IPTarget = (
    ipaddress.IPv4Network | ipaddress.IPv6Network | ipaddress.IPv4Address | ipaddress.IPv6Address
)
PortRange = tuple[int, int]
Progress = Callable[[float, int], None]  # (percent 0-100, open ports found so far)
LineHandler = Callable[[str, str], None]  # (stream "stdout" | "stderr", line without newline)
ChunkHandler = Callable[[bytes], None]  # raw output as read; b"" once at the end

_TARGET_TYPES = (
    ipaddress.IPv4Network,
    ipaddress.IPv6Network,
    ipaddress.IPv4Address,
    ipaddress.IPv6Address,
)
_PR_SET_PDEATHSIG = 1
# Whatever a process prints, we keep at most this much of each stream in memory.
_MAX_STREAM_BYTES = 64 * 1024 * 1024
# A tool that prints a line per probe must not stall on a full pipe while its reader waits
# for a CPU: ask for a 1 MiB pipe (Linux's default limit for unprivileged processes).
_F_SETPIPE_SZ = 1031
_PIPE_BYTES = 1024 * 1024
# Between reads of a chunked stdout, when the last read was small. masscan prints ~4 MB/s
# with --show closed: 50 ms fills about a fifth of the pipe.
_CHUNK_PAUSE_S = 0.05


class EngineError(Exception):
    """A scan engine could not do its job; the message is meant for the user."""


class EngineTimeout(EngineError):
    """The engine ran past its time budget and was stopped; `partial` holds what it had."""

    def __init__(self, message: str, partial: object = None):
        super().__init__(message)
        self.partial = partial


def check_targets(targets: Iterable[object]) -> list[IPTarget]:
    """Refuse anything but ipaddress objects: strings never reach an engine's command line."""
    if isinstance(targets, str | bytes) or not isinstance(targets, Iterable):
        raise EngineError("targets must be a list of ipaddress networks or addresses")
    checked = []
    for target in targets:
        if not isinstance(target, _TARGET_TYPES):
            raise EngineError(f"target {target!r} is not a validated network or address")
        if "%" in str(target):
            raise EngineError(f"target {target} has an interface scope; not supported")
        checked.append(target)
    if not checked:
        raise EngineError("no targets to scan")
    return checked


def check_ports(ports: Iterable[object]) -> list[PortRange]:
    """Refuse anything but (lo, hi) int pairs with 1 <= lo <= hi <= 65535."""
    if isinstance(ports, str | bytes) or not isinstance(ports, Iterable):
        raise EngineError("ports must be a list of (low, high) pairs")
    checked = []
    for item in ports:
        if not (isinstance(item, tuple | list) and len(item) == 2):
            raise EngineError(f"port range {item!r} is not a (low, high) pair")
        lo, hi = item
        if not (_is_int(lo) and _is_int(hi) and 1 <= lo <= hi <= 65535):
            raise EngineError(f"port range {item!r} is outside 1-65535")
        checked.append((lo, hi))
    if not checked:
        raise EngineError("no ports to scan")
    return checked


def check_number(name: str, value: object, lo: float, hi: float, *, integer: bool = False) -> None:
    ok = _is_int(value) if integer else (_is_int(value) or isinstance(value, float))
    if not ok or not lo <= value <= hi:  # type: ignore[operator]
        kind = "an integer" if integer else "a number"
        raise EngineError(f"{name} must be {kind} between {lo} and {hi}, got {value!r}")


def _is_int(value: object) -> bool:
    # bool is an int subclass; True as a port or a rate is a bug, not a value.
    return isinstance(value, int) and not isinstance(value, bool)


def merge_ports(ports: Sequence[PortRange]) -> list[PortRange]:
    """Sort and merge overlapping or adjacent ranges."""
    merged: list[list[int]] = []
    for lo, hi in sorted(ports):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return [(lo, hi) for lo, hi in merged]


def format_ports(ports: Sequence[PortRange]) -> str:
    """Ports as nmap/masscan spell them: "22,80,8000-8100"."""
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in merge_ports(ports))


@dataclass
class ProcessResult:
    returncode: int
    stdout: str
    stderr: str
    seconds: float


# Resolved once in the parent: between fork and exec the child should do as little as
# possible (no dlopen/dlsym, which take locks another thread may have held at fork time).
_prctl = ctypes.CDLL(None, use_errno=True).prctl


def _child_setup(parent_pid: int, nice: int) -> Callable[[], None]:
    def setup() -> None:
        # Ask the kernel to SIGKILL the child when the forking thread dies, so a worker that
        # is SIGKILLed (OOM, hard time limit, operator) does not leave masscan sending.
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        # The parent may have died between fork and prctl: then nobody would kill us.
        if os.getppid() != parent_pid:
            os._exit(1)
        if nice:
            os.nice(nice)

    return setup


def run_process(
    argv: Sequence[str],
    *,
    timeout: float,
    on_line: LineHandler | None = None,
    on_start: Callable[[subprocess.Popen], None] | None = None,
    cwd: str | None = None,
    nice: int = 0,
    on_stdout: ChunkHandler | None = None,
) -> ProcessResult:
    """Run argv (no shell) in its own process group, streaming lines; never leave it behind.

    Lines are split on "\\n" and "\\r" (masscan redraws its status line with "\\r").
    On timeout the whole group is killed and EngineTimeout is raised with the output so far
    as `partial`; on any other exception (KeyboardInterrupt, SystemExit, Celery's
    SoftTimeLimitExceeded, an error in on_line) the group is killed and the exception goes on.
    on_start receives the Popen, for adapters that must signal their tool (see masscan).
    on_stdout, if given, takes stdout as raw chunks instead (for output too large to split
    into str lines or to keep: the result's stdout is then empty).
    nice (0-19) lowers the process's CPU priority: a tool that mostly waits (nmap -sV) then
    cannot take CPU from one that must keep its pace (masscan) on the same machine.
    Note: PR_SET_PDEATHSIG fires when the *thread* that started the process exits, so call
    this from the thread that waits for it (as it does: it blocks until the process ends).
    """
    # A str is a sequence of str too: refuse it by type, not by luck ("m" not existing).
    if isinstance(argv, str | bytes) or not argv or not all(isinstance(a, str) for a in argv):
        raise EngineError("command line must be a non-empty list of strings")
    check_number("timeout", timeout, 0.001, 7 * 24 * 3600)
    check_number("nice", nice, 0, 19, integer=True)
    started = time.monotonic()
    deadline = started + timeout
    try:
        proc = subprocess.Popen(  # noqa: S603 - argv list from validated values, no shell
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_child_setup(os.getpid(), nice),  # noqa: PLW1509 - single-threaded use
            close_fds=True,
        )
    except OSError as exc:
        raise EngineError(f"cannot start {argv[0]}: {exc.strerror or exc}") from exc

    chunks: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
    sizes = {"stdout": 0, "stderr": 0}
    pending = {"stdout": b"", "stderr": b""}
    finished = False
    try:
        if on_start:
            on_start(proc)
        with selectors.DefaultSelector() as sel:
            assert proc.stdout is not None and proc.stderr is not None
            for name, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr)):
                os.set_blocking(pipe.fileno(), False)
                sel.register(pipe, selectors.EVENT_READ, name)
            pause = 0.0
            if on_stdout:
                try:
                    fcntl.fcntl(proc.stdout.fileno(), _F_SETPIPE_SZ, _PIPE_BYTES)
                    pause = _CHUNK_PAUSE_S
                except OSError:
                    pass  # a 64 KiB pipe: read as it comes (more wake-ups, no stalls)
            open_pipes = 2
            while open_pipes:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise EngineTimeout(
                        f"{os.path.basename(argv[0])} did not finish within {timeout:g}s",
                        partial=ProcessResult(
                            -1,
                            b"".join(chunks["stdout"]).decode("utf-8", "replace"),
                            b"".join(chunks["stderr"]).decode("utf-8", "replace"),
                            time.monotonic() - started,
                        ),
                    )
                for key, _ in sel.select(min(remaining, 1.0)):
                    name = key.data
                    if on_stdout and name == "stdout":
                        data = os.read(key.fd, _PIPE_BYTES)
                        on_stdout(data)
                        if not data:
                            sel.unregister(key.fileobj)
                            open_pipes -= 1
                        elif pause and len(data) < _PIPE_BYTES // 4:
                            # Let output pile up in the pipe: a wake-up per few lines would
                            # cost more CPU than the lines themselves.
                            time.sleep(pause)
                        continue
                    data = os.read(key.fd, 65536)
                    if not data:
                        sel.unregister(key.fileobj)
                        open_pipes -= 1
                        lines, pending[name] = _split_lines(pending[name], final=True)
                    else:
                        if sizes[name] < _MAX_STREAM_BYTES:
                            chunks[name].append(data)
                            sizes[name] += len(data)
                        lines, pending[name] = _split_lines(pending[name] + data)
                    if on_line:
                        for line in lines:
                            on_line(name, line)
            remaining = max(deadline - time.monotonic(), 0.001)
            try:
                returncode = proc.wait(remaining)
            except subprocess.TimeoutExpired:
                raise EngineTimeout(
                    f"{os.path.basename(argv[0])} did not exit within {timeout:g}s"
                ) from None
            finished = True
    finally:
        if not finished:
            _kill_group(proc)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    return ProcessResult(
        returncode,
        b"".join(chunks["stdout"]).decode("utf-8", "replace"),
        b"".join(chunks["stderr"]).decode("utf-8", "replace"),
        time.monotonic() - started,
    )


def _split_lines(buffer: bytes, final: bool = False) -> tuple[list[str], bytes]:
    parts = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    rest = b"" if final else parts.pop()
    lines = [p.decode("utf-8", "replace") for p in parts if p.strip()]
    return lines, rest


def _kill_group(proc: subprocess.Popen) -> None:
    # The child leads its own group (start_new_session), so its pgid is its pid; it is not
    # reaped yet, so the pid cannot have been reused.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL in D state only
        pass
