"""Built-in asynchronous TCP connect scanner: no root, works on loopback and IPv6.

Speed comes from staying close to the event loop: each probe is a non-blocking socket,
`connect_ex`, a writer callback and a slot in a shared expiry queue, instead of
`open_connection` with `wait_for` (stream objects and a timer per probe: that is the naive
3.3k probes/s; this does about 20-25k/s on one core of this machine). A fixed pool of worker
coroutines pulls probes from a generator, so memory stays flat whatever the probe count.
"""

import asyncio
import collections
import errno
import ipaddress
import resource
import socket
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

from scanner.findings import Finding

from .base import (
    EngineError,
    EngineTimeout,
    IPTarget,
    PortRange,
    Progress,
    check_number,
    merge_ports,
)
from .options import NO_EVENTS, ProbeOptions, SweepEvents, SweepOptions

OPEN, CLOSED, FILTERED = "open", "closed", "filtered"
PROGRESS_EVERY = 0.5  # seconds between on_progress calls
# Close with RST instead of FIN: no TIME_WAIT sockets pile up on our side, so a full
# 65535-port sweep cannot run out of ephemeral ports (the local range is ~28k).
_LINGER_RST = struct.pack("ii", 1, 0)
# Errors that mean "we ran short of a local resource", not "the port is closed": wait and
# try again without spending a retry.
_LOCAL_SHORTAGE = {errno.EADDRNOTAVAIL, errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.EAGAIN}
_MAX_SHORTAGE_WAITS = 50
# One call scans at most this many addresses (a /8): bigger jobs are for the shard planner.
MAX_HOSTS = 1 << 24
# Descriptors kept free for the rest of the process (DB connections, logs, Celery).
_FD_RESERVE = 128

Probe = tuple[int, str, int]  # (address family, ip, port)
# verify()'s defaults: a known-open port deserves two more tries.
VERIFY_PROBES = ProbeOptions(timeout=1.0, retries=2, concurrency=500)


def sweep(options: SweepOptions, events: SweepEvents = NO_EVENTS) -> list[Finding]:
    """Connect-scan every address of options.targets (minus its exclusions) on its ports;
    return the open ones.

    A probe that times out is tried again up to options.prober.retries times; a refused port
    is closed and is not retried. Past options.deadline EngineTimeout is raised with the
    findings so far in `.partial`. events.finding, if given, gets each open port as soon as
    it is seen (e.g. to start its fingerprint while the scan goes on). events.answers, if
    given, gets batches of (ip, port), one per probe that drew an answer (open or refused),
    as masscan's do: a caller can tell a real host (mostly refusals) from a SYN proxy (all
    open) before the scan ends.

    The callbacks run one at a time in a helper thread, never inside the scan's event loop:
    they may use the database (Django refuses that from a thread running an event loop).
    An exception in one stops the scan and is raised here.
    """
    if options.proto != "tcp":
        raise EngineError("the connect scanner probes TCP; UDP ports go to the udp engine")
    port_ranges = merge_ports(options.ports)
    host_ranges = _host_ranges(options.probe_targets())
    n_hosts = sum(hi - lo + 1 for _family, lo, hi in host_ranges)
    if n_hosts > MAX_HOSTS:
        raise EngineError(f"{n_hosts} addresses in one connect scan; split the targets")
    n_ports = sum(hi - lo + 1 for lo, hi in port_ranges)
    probes = _probes(host_ranges, port_ranges)
    return asyncio.run(
        _run(
            probes,
            n_hosts * n_ports,
            options=options.prober,
            on_progress=events.progress,
            on_finding=events.finding,
            on_answers=events.answers,
            deadline=options.deadline,
            guard_loop=True,
        )
    )


def verify(
    findings: Iterable[Finding],
    probes: ProbeOptions = VERIFY_PROBES,
    *,
    deadline: float | None = None,
    on_confirmed: Callable[[Finding], None] | None = None,
) -> list[Finding]:
    """Re-check TCP findings (e.g. masscan hits) with a full connect; return those confirmed.

    Findings keep their fingerprint fields. Non-TCP findings are returned unchanged: a
    connect cannot tell anything about them. deadline: a time.monotonic() value.
    on_confirmed, if given, gets each confirmed TCP finding as soon as its connect succeeds
    (from a helper thread, as the sweep's callbacks), before the whole check ends.
    """
    return asyncio.run(
        verify_async(
            findings, probes, deadline=deadline, on_confirmed=on_confirmed, _guard_loop=True
        )
    )


async def verify_async(
    findings: Iterable[Finding],
    probes: ProbeOptions = VERIFY_PROBES,
    *,
    deadline: float | None = None,
    on_confirmed: Callable[[Finding], None] | None = None,
    _guard_loop: bool = False,
) -> list[Finding]:
    """verify() for callers that already run an event loop."""
    if not isinstance(probes, ProbeOptions):
        raise EngineError("probes must be a ProbeOptions")
    if deadline is not None:
        check_number("deadline", deadline, 0, float("inf"))
    by_key: dict[tuple[str, int], Finding] = {}
    passed: list[Finding] = []
    for finding in findings:
        if not isinstance(finding, Finding):
            raise EngineError(f"{finding!r} is not a Finding")
        if finding.proto != "tcp":
            passed.append(finding)
            continue
        try:
            ip = ipaddress.ip_address(finding.ip)
        except ValueError:
            raise EngineError(f"finding has an invalid address {finding.ip!r}") from None
        if "%" in str(ip):
            raise EngineError(f"finding address {ip} has an interface scope; not supported")
        if not 1 <= finding.port <= 65535:
            raise EngineError(f"finding has an invalid port {finding.port!r}")
        by_key.setdefault((str(ip), finding.port), finding)
    probe_list = (
        (socket.AF_INET6 if ":" in ip else socket.AF_INET, ip, port) for ip, port in by_key
    )

    def confirmed_one(finding: Finding) -> None:
        if on_confirmed is not None:
            on_confirmed(by_key[(finding.ip, finding.port)])

    confirmed = await _run(
        probe_list,
        len(by_key),
        options=probes,
        on_progress=None,
        deadline=deadline,
        on_finding=confirmed_one if on_confirmed is not None else None,
        guard_loop=_guard_loop,
    )
    return passed + [by_key[(f.ip, f.port)] for f in confirmed]


def _host_ranges(targets: Sequence[IPTarget]) -> list[tuple[int, int, int]]:
    """(family, first, last) integer ranges: every address of every target.

    A target is an address set, not a subnet: a CIDR the user wrote, or a block the shard
    planner or the route plan cut, has no network or broadcast address of its own (the
    first and last address of 198.18.42.0/27 are hosts of the /24 link). nmap and masscan
    probe every address too. The link's own broadcast address costs one probe, which the
    kernel refuses at once (ENETUNREACH: an answer, counted closed).
    """
    ranges: list[tuple[int, int, int]] = []
    for target in targets:
        family = socket.AF_INET if target.version == 4 else socket.AF_INET6
        if isinstance(target, ipaddress.IPv4Address | ipaddress.IPv6Address):
            ranges.append((family, int(target), int(target)))
        else:
            ranges.append((family, int(target.network_address), int(target.broadcast_address)))
    return ranges


def _probes(
    host_ranges: list[tuple[int, int, int]], port_ranges: list[PortRange]
) -> Iterator[Probe]:
    # Port-major order spreads consecutive probes across hosts, so no single host gets a
    # burst of SYNs (rate limits, SYN backlogs) while the others sit idle.
    for plo, phi in port_ranges:
        for port in range(plo, phi + 1):
            for family, first, last in host_ranges:
                size = 4 if family == socket.AF_INET else 16
                for value in range(first, last + 1):
                    yield family, socket.inet_ntop(family, value.to_bytes(size, "big")), port


def _raise_fd_limit(wanted: int) -> int:
    """Lift the soft descriptor limit toward the hard one; return the usable concurrency."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + _FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < need:
        new_soft = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
            soft = new_soft
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - _FD_RESERVE))


class _Expiry:
    """Times out waiters in start order: one deque and one ticker instead of a timer each.

    Every probe has the same timeout, so deadlines arrive in start order and expiring them
    is a popleft; per-probe call_later timers cost a heap push and a handle each (measured:
    about 10% of a loopback sweep).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop, self.timeout = loop, timeout
        self.queue: collections.deque[tuple[float, asyncio.Future]] = collections.deque()
        self.tick = min(max(timeout / 10, 0.005), 0.05)

    def add(self, waiter: asyncio.Future) -> None:
        self.queue.append((self.loop.time() + self.timeout, waiter))

    async def run(self) -> None:
        queue = self.queue
        while True:
            await asyncio.sleep(self.tick)
            now = self.loop.time()
            while queue and (queue[0][0] <= now or queue[0][1].done()):
                _deadline, waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)


async def _connect_once(
    loop: asyncio.AbstractEventLoop, family: int, ip: str, port: int, expiry: _Expiry
) -> int | None:
    """One connect attempt: 0 open, an errno, or None on timeout."""
    sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        err = sock.connect_ex((ip, port))
        if err != errno.EINPROGRESS:
            return err
        fd = sock.fileno()
        waiter = loop.create_future()

        def writable() -> None:
            if not waiter.done():
                waiter.set_result(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))

        loop.add_writer(fd, writable)
        expiry.add(waiter)
        try:
            return await waiter
        finally:
            loop.remove_writer(fd)
    finally:
        sock.close()


async def _probe(
    loop: asyncio.AbstractEventLoop, family: int, ip: str, port: int, expiry: _Expiry, retries: int
) -> str:
    attempts = shortages = 0
    while True:
        err = await _connect_once(loop, family, ip, port, expiry)
        if err == 0:
            return OPEN
        if err is None:
            attempts += 1
            if attempts > retries:
                return FILTERED
            continue
        if err in _LOCAL_SHORTAGE and shortages < _MAX_SHORTAGE_WAITS:
            shortages += 1
            await asyncio.sleep(0.05 * shortages)
            continue
        # Refused, unreachable (ICMP), reset: an answer, so no retry.
        return CLOSED


async def _run(
    probes: Iterator[Probe],
    total: int,
    *,
    options: ProbeOptions,
    on_progress: Progress | None,
    deadline: float | None,
    on_finding: Callable[[Finding], None] | None = None,
    on_answers: Callable[[list[tuple[str, int]]], None] | None = None,
    guard_loop: bool = False,
) -> list[Finding]:
    loop = asyncio.get_running_loop()
    concurrency, timeout, retries = options.concurrency, options.timeout, options.retries
    found: list[Finding] = []
    done = 0
    timed_out = False
    workers = min(_raise_fd_limit(concurrency), max(total, 1))
    expiry = _Expiry(loop, timeout)
    callbacks = _Callbacks() if on_progress or on_finding or on_answers else None
    answered: list[tuple[str, int]] = []  # since the last on_answers batch

    async def worker() -> None:
        nonlocal done, timed_out
        for family, ip, port in probes:
            if deadline is not None and time.monotonic() > deadline:
                timed_out = True
                return
            state = await _probe(loop, family, ip, port, expiry, retries)
            if on_answers and state != FILTERED:
                answered.append((ip, port))
            if state == OPEN:
                finding = Finding(ip=ip, port=port, proto="tcp")
                found.append(finding)
                if on_finding:
                    callbacks.call(on_finding, finding)  # type: ignore[union-attr]
            done += 1

    failure: list[BaseException] = []
    main = asyncio.gather(*(worker() for _ in range(workers)))

    def fail(exc: BaseException) -> None:
        if not failure:
            failure.append(exc)
        main.cancel()

    def answers_flush() -> None:
        if answered:
            callbacks.call(on_answers, answered.copy())  # type: ignore[union-attr,arg-type]
            answered.clear()

    async def reporter() -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY)
            answers_flush()
            if callbacks.error:  # type: ignore[union-attr]
                # e.g. the caller's progress or finding write failed: stop the scan
                fail(callbacks.error)  # type: ignore[union-attr]
                return
            if on_progress:
                percent = 100.0 * done / total if total else 100.0
                callbacks.call(on_progress, percent, len(found))  # type: ignore[union-attr]

    def on_loop_error(_loop: asyncio.AbstractEventLoop, context: dict) -> None:
        # asyncio logs and swallows exceptions raised in callbacks. Celery's
        # SoftTimeLimitExceeded arrives by signal and can land in one (a writer callback):
        # it must stop the scan, not vanish into a log line.
        fail(context.get("exception") or EngineError(context.get("message", "event loop error")))

    previous_handler = loop.get_exception_handler()
    if guard_loop:
        loop.set_exception_handler(on_loop_error)
    ticker = asyncio.create_task(reporter()) if callbacks else None
    expirer = asyncio.create_task(expiry.run())
    try:
        # Generators are not thread-safe but are fine to share between coroutines: only one
        # runs at a time, and next() never awaits.
        await main
    except asyncio.CancelledError:
        if not failure:
            raise
    finally:
        expirer.cancel()
        if ticker:
            ticker.cancel()
        if guard_loop:
            loop.set_exception_handler(previous_handler)
    if callbacks:
        answers_flush()
        if on_progress and not failure and not timed_out:
            callbacks.call(on_progress, 100.0, len(found))
        await loop.run_in_executor(None, callbacks.close)
        if callbacks.error and not failure:
            failure.append(callbacks.error)
    if failure:
        raise failure[0]
    found.sort(key=lambda f: (ipaddress.ip_address(f.ip), f.port))
    if timed_out:
        raise EngineTimeout(
            f"connect scan stopped at its deadline after {done} of {total} probes", partial=found
        )
    return found


class _Callbacks:
    """The caller's callbacks, run in order in one helper thread; the first error is kept."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="connect-callback")
        self.error: BaseException | None = None

    def call(self, function: Callable[..., None], *args: object) -> None:
        if self.error is None:
            self.pool.submit(self._run, function, *args)

    def _run(self, function: Callable[..., None], *args: object) -> None:
        if self.error is not None:
            return
        try:
            function(*args)
        except Exception as exc:  # handed to the scan, which raises it
            self.error = exc

    def close(self) -> None:
        self.pool.shutdown(wait=True)
