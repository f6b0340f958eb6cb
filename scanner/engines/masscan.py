"""masscan adapter: a stateless SYN sweep at a fixed rate, JSON results, live progress."""

import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

from scanner.findings import Finding

from . import connect, privileges, routes, udp
from .base import (
    EngineError,
    EngineTimeout,
    IPTarget,
    PortRange,
    Progress,
    check_ports,
    check_targets,
    format_ports,
    run_process,
)
from .options import (
    NO_EVENTS,
    Answers,
    MasscanOptions,
    SweepEvents,
    SweepOptions,
    subtract,
)

# A sweep without a deadline still gets a budget: run_process's longest.
MAX_SWEEP_S = 7 * 24 * 3600
IPv4Target = ipaddress.IPv4Network | ipaddress.IPv4Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# masscan redraws one status line on stderr, e.g.
#   "rate:  9.98-kpps, 12.34% done,   0:01:02 remaining, found=3       "
#   "rate:  0.00-kpps, 100.00% done, waiting 2-secs, found=5       "
_STATUS = re.compile(r"(\d+(?:\.\d+)?)%[ -]done.*?found=(\d+)")
_WAITING = re.compile(r"waiting (-?\d+)-secs")
# masscan 1.3.2 can hang after its --wait: the receive thread stays blocked in libpcap until
# a packet arrives, printing "waiting -N-secs" forever (robertdavidgraham/masscan#144, #813).
# Once the countdown is below zero the scan is over. Its SIGINT handler then exits (after
# stdio flushed the output file) on the third SIGINT, so we send one per status line (4/s;
# identical pending signals would merge into one) and SIGKILL if that did not help.
STUCK_AFTER = -1
_MAX_SIGINTS = 8
# With --interactive masscan also prints each hit on stdout as it arrives (unbuffered), which
# lets fingerprinting start while the sweep still runs; with --show closed, each RST too.
_ANSWER = re.compile(rb"Discovered (open|closed) port (\d+)/(tcp|udp) on ([0-9A-Fa-f.:]+)")


def available() -> bool:
    """masscan is installed and this process may send raw packets (CAP_NET_RAW)."""
    return unavailable_reason() is None


def unavailable_reason() -> str | None:
    """Why masscan cannot run in this process, or None if it can."""
    if shutil.which("masscan") is None:
        return "masscan is not installed (apt-get install masscan)"
    if not privileges.can_send_raw_packets():
        return privileges.NEEDS_NET_RAW
    return None


def build_argv(
    *,
    targets: Iterable[IPTarget],
    ports: Sequence[PortRange],
    options: MasscanOptions,
    output_path: str | None,
    exclude_path: str | None = None,
    stream: bool = False,
    show_closed: bool = False,
    proto: str = "tcp",
    nmap_payloads: str | None = None,
) -> list[str]:
    """The masscan command line, from validated values only (options checked its own).

    proto "udp": the ports as masscan's U:port (it sends its built-in protocol requests,
    plus those of nmap_payloads, the path of an nmap-payloads file, when given).
    """
    checked = check_targets(targets)
    if any(target.version != 4 for target in checked):
        # masscan 1.3's IPv6 support is partial; IPv6 goes to the connect scanner.
        raise EngineError("masscan is used for IPv4 only; scan IPv6 with the connect engine")
    if proto not in ("tcp", "udp"):
        raise EngineError(f"protocol must be tcp or udp, got {proto!r}")
    if not isinstance(options, MasscanOptions):
        raise EngineError("options must be a MasscanOptions")
    port_text = format_ports(check_ports(ports))
    if proto == "udp":
        port_text = ",".join(f"U:{item}" for item in port_text.split(","))
    argv = [shutil.which("masscan") or "masscan", "-p", port_text, "--rate", str(options.rate)]
    argv += ["--retries", str(options.retries), "--wait", str(options.wait)]
    if output_path is not None:
        argv += ["-oJ", _check_path(output_path)]
    if exclude_path is not None:
        argv += ["--excludefile", _check_path(exclude_path)]
    if nmap_payloads is not None:
        argv += ["--nmap-payloads", _check_path(nmap_payloads)]
    if options.interface is not None:
        argv += ["--adapter", options.interface]
    if options.source_ip is not None:
        argv += ["--adapter-ip", options.source_ip]
    if options.router_mac is not None:
        argv += ["--router-mac", options.router_mac.replace(":", "-")]
    if stream:
        argv.append("--interactive")
    if show_closed:
        argv += ["--show", "closed"]
    # Targets last and via --range, so that not even a positional argument is free-form.
    for target in checked:
        argv += ["--range", str(target)]
    return argv


def sweep(options: SweepOptions, events: SweepEvents = NO_EVENTS) -> list[Finding]:
    """Sweep options.targets x ports with masscan; return open TCP ports (proto "udp": UDP
    candidates).

    proto "udp": masscan sends its protocol requests (and ours, udp.masscan_payloads) and
    lists a port that sent any UDP reply; on-link targets go to the UDP prober (udp.sweep)
    instead of the connect scanner. masscan's UDP list is a list of candidates (masscan
    #182, #357): the caller confirms each one before calling it open.

    events.answers, if given, is called with batches of (ip, port), one for every TCP probe
    that got any answer, open (SYN-ACK) or closed (RST): the caller can then tell which
    probes got none (lost on the way, or filtered) and re-probe just those.

    events.finding, if given, is called once per open port as soon as masscan sees it
    (before the sweep ends), e.g. to queue its fingerprint early. events.progress gets
    masscan's percent and the number of distinct open ports so far.

    Where the probes leave is the kernel's choice, not masscan's (routes.plan): targets are
    grouped by route and each group gets its own masscan with the route's interface, source
    address and gateway MAC. options.masscan's interface / source_ip / router_mac
    (PORTMON_MASSCAN_*) are overrides checked against the route. Targets on a directly
    attached subnet (no gateway) go to the connect scanner instead, with options.prober:
    masscan puts one destination MAC in every frame, and on-link hosts each have their own.
    Their answers are not reported to events.answers (the connect scanner retries timeouts
    itself), so a re-probe treats them as silent; they go to events.link_answers instead, if
    given (e.g. to tell a SYN proxy from a real host early). options.plan, if given, is
    routes.plan() of these very targets, made by the caller (who checked it).

    Past options.deadline masscan's process group is killed and EngineTimeout carries the
    findings written so far in `.partial`.
    """
    targets = [t for t in options.targets if isinstance(t, IPv4Target)]
    if len(targets) != len(options.targets):
        raise EngineError("masscan is used for IPv4 only; scan IPv6 with the connect engine")
    # masscan sweeps IPv4 only: an IPv6 exclusion cannot apply.
    excluded = [n for n in options.exclude if isinstance(n, ipaddress.IPv4Network)]
    # Checked before any file or process: without CAP_NET_RAW masscan only prints a vague
    # "permission denied" from libpcap.
    reason = unavailable_reason()
    if reason is not None:
        raise EngineError(reason)
    deadline = options.deadline
    if deadline is None:
        deadline = time.monotonic() + MAX_SWEEP_S
    knobs = options.masscan
    plan = options.plan
    if plan is None:
        plan = routes.plan(
            targets,
            interface=knobs.interface,
            source_ip=knobs.source_ip,
            router_mac=knobs.router_mac,
        )
    jobs = sweep_jobs(plan, excluded)
    # Progress is shared out by addresses: every group sweeps the same ports.
    sizes = [sum(network.num_addresses for network in networks) for networks, _ in jobs]
    total = sum(sizes) or 1
    found: list[Finding] = []
    done = 0.0
    for (networks, egress), size in zip(jobs, sizes, strict=True):
        share = 100.0 * size / total
        remaining = deadline - time.monotonic()
        if remaining < 1:
            raise EngineTimeout("the sweep ran past its time budget", partial=_merge(found))

        def progress(
            percent: float,
            count: int,
            start: float = done,
            span: float = share,
            base: int = len(found),
        ) -> None:
            if events.progress:
                events.progress(min(100.0, start + span * percent / 100.0), base + count)

        try:
            if egress is None:
                # On-link: the prober of the protocol, over exactly these (excluded) pieces.
                part = replace(
                    options, targets=tuple(networks), exclude=(), deadline=deadline, plan=None
                )
                prober = udp.sweep if options.proto == "udp" else connect.sweep
                group = prober(
                    part,
                    SweepEvents(
                        progress=progress,
                        finding=events.finding,  # as found: fingerprints start during the scan
                        answers=events.link_answers,
                    ),
                )
            else:
                group = _run_masscan(
                    targets=networks,
                    ports=options.ports,
                    proto=options.proto,
                    options=replace(
                        knobs,
                        interface=egress.interface,
                        source_ip=str(egress.source_ip),
                        router_mac=egress.router_mac,
                    ),
                    excluded=excluded,
                    timeout=remaining,
                    on_progress=progress,
                    on_finding=events.finding,
                    on_answers=events.answers if options.proto == "tcp" else None,
                )
        except EngineTimeout as exc:
            exc.partial = _merge(found, exc.partial if isinstance(exc.partial, list) else [])
            raise
        found += group
        done += share
    findings = _merge(found)
    if events.progress:
        events.progress(100.0, len(findings))
    return findings


Job = tuple[Sequence[Network], "routes.Egress | None"]


def sweep_jobs(plan: routes.SweepPlan, excluded: Sequence[ipaddress.IPv4Network]) -> list[Job]:
    """The engine runs of a sweep: one masscan per egress (its exclude file takes the
    exclusions), then the on-link targets minus the exclusions for the connect scanner."""
    jobs: list[Job] = [(egress.targets, egress) for egress in plan.masscan]
    on_link = subtract(plan.connect, excluded)
    if on_link:
        jobs.append((on_link, None))
    return jobs


def _run_masscan(
    *,
    targets: Sequence[Network],
    ports: Sequence[PortRange],
    proto: str,
    options: MasscanOptions,
    excluded: list[ipaddress.IPv4Network],
    timeout: float,
    on_progress: Progress | None,
    on_finding: Callable[[Finding], None] | None,
    on_answers: Answers | None,
) -> list[Finding]:
    """One masscan over targets that share a route (options carry the route's); see sweep."""
    # A private directory: masscan writes paused.conf into its cwd when interrupted, and
    # the output and exclude files must not be guessable paths in a shared /tmp.
    with tempfile.TemporaryDirectory(prefix="portmon-masscan-") as workdir:
        # When every answer is streamed (on_answers), stdout is the record: a JSON file
        # would hold a record per closed port too (hundreds of MB for a full range).
        output_path = None if on_answers else os.path.join(workdir, "out.json")
        exclude_path = None
        if excluded:
            exclude_path = os.path.join(workdir, "exclude.txt")
            with open(exclude_path, "w") as fh:
                fh.write("".join(f"{network}\n" for network in excluded))
        payloads_path = None
        if proto == "udp":
            payloads_path = os.path.join(workdir, "payloads.txt")
            with open(payloads_path, "w") as fh:
                fh.write(udp.masscan_payloads(p for lo, hi in ports for p in range(lo, hi + 1)))
        argv = build_argv(
            targets=targets,
            ports=ports,
            options=options,
            output_path=output_path,
            exclude_path=exclude_path,
            stream=True,
            show_closed=on_answers is not None,
            proto=proto,
            nmap_payloads=payloads_path,
        )
        last = [-1.0]
        # Hits as masscan printed them: unique counts for progress (its own found= counts
        # every reply, retries included) and a second record of results should the JSON
        # file lose its buffered tail (masscan SIGKILLed).
        streamed: dict[tuple[str, str, int], Finding] = {}
        process: list[subprocess.Popen] = []
        sigints = [0]

        def on_hit(finding: Finding) -> None:
            if finding.key not in streamed:
                streamed[finding.key] = finding
                if on_finding:
                    on_finding(finding)

        def on_line(stream: str, line: str) -> None:  # stderr: masscan's status line
            waiting = _WAITING.search(line)
            if waiting and int(waiting.group(1)) <= STUCK_AFTER and process[0].poll() is None:
                sigints[0] += 1
                if sigints[0] <= _MAX_SIGINTS:
                    process[0].send_signal(signal.SIGINT)
                else:
                    os.killpg(process[0].pid, signal.SIGKILL)
            if on_progress is None:
                return
            match = _STATUS.search(line)
            if match:
                percent = min(float(match.group(1)), 100.0)
                if percent != last[0]:
                    last[0] = percent
                    on_progress(percent, len(streamed))

        try:
            result = run_process(
                argv,
                timeout=timeout,
                on_line=on_line,
                on_stdout=AnswerReader(on_hit=on_hit, on_answers=on_answers),
                on_start=process.append,
                cwd=workdir,
            )
        except EngineTimeout as exc:
            exc.partial = _merge(_read_findings(output_path), streamed.values())
            raise
        # After our stop masscan exits with 1 (its "threads not exiting" path): not a failure.
        if result.returncode != 0 and not (sigints[0] and result.returncode in (1, -2, -9)):
            raise EngineError(f"masscan failed: {_last_error(result.stderr, result.returncode)}")
        return _merge(_read_findings(output_path), streamed.values())


class AnswerReader:
    """Reads masscan's --interactive stdout: a line per answer, at up to ~100k lines/s.

    "Discovered open port 22/tcp on 198.18.7.2" goes to on_hit (validated, as a Finding);
    with --show closed, "Discovered closed port 1094/tcp on 198.18.7.2" lines come too, and
    every TCP answer goes to on_answers in batches. This is the hot path of a sweep: one
    regex pass over each chunk, no per-line str objects, so that the reader keeps up with
    masscan (a reader that falls behind fills the pipe, blocks masscan's receive thread and
    its capture ring drops answers).
    """

    def __init__(
        self,
        *,
        on_hit: Callable[[Finding], None],
        on_answers: Callable[[list[tuple[str, int]]], None] | None = None,
    ):
        self.on_hit = on_hit
        self.on_answers = on_answers
        self.rest = b""
        self.ips: dict[bytes, str] = {}

    def __call__(self, chunk: bytes) -> None:
        data = self.rest + chunk
        if chunk:
            cut = data.rfind(b"\n") + 1
            data, self.rest = data[:cut], data[cut:]
        else:
            self.rest = b""  # end of output: read the last, unterminated line too
        answers = []
        ips = self.ips
        for status, port, proto, ip in _ANSWER.findall(data):
            if status == b"open":
                finding = _finding(ip.decode(), port, proto.decode())
                if finding:
                    self.on_hit(finding)
            if proto == b"tcp":
                text = ips.get(ip)
                if text is None:
                    text = ips[ip] = ip.decode()
                answers.append((text, int(port)))
        if answers and self.on_answers:
            self.on_answers(answers)


def parse_json(text: str) -> list[Finding]:
    """Parse masscan -oJ output; tolerant of its quirks and of a file cut short.

    masscan's "JSON" has had trailing commas before "]", a final {"finished": 1} record,
    and no closing bracket when killed. Each record is read on its own; anything that is
    not an IP record with open ports is skipped. Duplicates (retries, banners) are merged.
    """
    if not isinstance(text, str):
        raise EngineError("masscan output must be text")
    decoder = json.JSONDecoder()
    seen: dict[tuple[str, str, int], Finding] = {}
    pos, end = 0, len(text)
    while pos < end:
        char = text[pos]
        if char in " \t\r\n,[]":
            pos += 1
            continue
        if char != "{":
            raise EngineError(f"not masscan JSON: unexpected {char!r} at offset {pos}")
        try:
            record, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            if "\n" not in text[pos:].rstrip():
                break  # the last line was cut short (masscan killed): keep the others
            raise EngineError(f"not masscan JSON: broken record at offset {pos}") from None
        for finding in _record_findings(record):
            seen.setdefault(finding.key, finding)
    return _merge(seen.values())


def _record_findings(record: object) -> list[Finding]:
    if not isinstance(record, dict) or "ip" not in record:
        return []
    try:
        ip = str(ipaddress.ip_address(record["ip"]))
    except (TypeError, ValueError):
        return []
    found = []
    for entry in record.get("ports") or []:
        if not isinstance(entry, dict):
            continue
        port, proto = entry.get("port"), entry.get("proto", "tcp")
        if not (isinstance(port, int) and 1 <= port <= 65535 and proto in ("tcp", "udp")):
            continue
        # Status records say "open"; banner records (--banners) carry "service" instead.
        if entry.get("status", "open") == "open":
            found.append(Finding(ip=ip, port=port, proto=proto))
    return found


def _merge(*groups: Iterable[Finding]) -> list[Finding]:
    merged: dict[tuple[str, str, int], Finding] = {}
    for group in groups:
        for finding in group:
            merged.setdefault(finding.key, finding)
    return sorted(merged.values(), key=lambda f: (ipaddress.ip_address(f.ip), f.proto, f.port))


def _finding(ip: str, port: str | bytes, proto: str) -> Finding | None:
    try:
        ip = str(ipaddress.ip_address(ip))
    except ValueError:
        return None
    number = int(port)
    return Finding(ip=ip, port=number, proto=proto) if 1 <= number <= 65535 else None


def _read_findings(path: str | None) -> list[Finding]:
    if path is None:
        return []
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return parse_json(fh.read())
    except FileNotFoundError:
        return []


def _check_path(path: str) -> str:
    # Our own temp paths; absolute so that no "-" can start the argument.
    if not isinstance(path, str) or not os.path.isabs(path) or "\n" in path:
        raise EngineError(f"{path!r} is not an absolute path")
    return path


def _last_error(stderr: str, returncode: int) -> str:
    lines = [line.strip() for line in stderr.replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if not line.startswith("rate:")]
    return errors[-1] if errors else f"exit code {returncode}"
