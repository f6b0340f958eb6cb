"""nmap adapter: service fingerprints (-sV) on ports already known to be open.

Why not python-libnmap's NmapProcess (0.7.3): it joins options and targets into one string
and shlex-splits it. There is no shell, but its CVE-2022-30284 target check allows spaces, so
a list target "127.0.0.1 -oN /tmp/x" still becomes the options `-oN /tmp/x` (checked with
get_command_line). It also has no timeout, no process group, and reads stderr only after
exit (a chatty nmap can block on a full pipe). So nmap runs through our run_process with an
argv list (target after "--", from an ipaddress object), and python-libnmap is used for
what it does well: NmapParser.

Results as nmap has them: nmap writes a host's XML only when its whole host group is done,
so one slow service (it answers after nmap's 5 s probe window, or accepts and never speaks:
nmap then tries ~28 probes, 164 s measured on loopback) held every port of its run. Each run
now has --version-trace, whose "Service scan match" line nmap prints (and flushes) the moment
a port is named; fingerprint_many hands those to on_finding while nmap goes on, and the XML
(written to a private file, since stdout carries the trace) completes them at the end (CPE,
NSE refinements). --min-parallelism covers every port of a run, so all start probing at
once and --host-timeout is each port's own budget, not a share of the slowest's.
"""

import ipaddress
import re
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from libnmap.parser import NmapParser, NmapParserException

from scanner.findings import Finding

from . import nmap_probes
from .base import EngineError, check_number, run_process

HostStatus = Literal["up", "unknown"]
# nmap needs a few seconds beyond --host-timeout to start, resolve nothing (-n) and write XML.
PROCESS_MARGIN = 30.0


@dataclass
class HostResult:
    """What nmap said about one host. "unknown" (timeout, error) must never close a port."""

    ip: str
    status: HostStatus
    findings: list[Finding] = field(default_factory=list)
    error: str = ""


def available() -> bool:
    return shutil.which("nmap") is not None


# nmap -sU -sV tries each of its UDP probes in turn on a port none of them matches and waits
# for each: an SSDP responder took 108 s at the default intensity (7), past the port
# timeout, and so stayed unnamed; at 2 the lab's DNS, NTP, SNMP, memcached and SSDP were all
# named in 11.5 s (the probes for a port's own service are sent at any intensity).
UDP_VERSION_INTENSITY = 2

IPLike = ipaddress.IPv4Address | ipaddress.IPv6Address | str
# One nmap run fingerprints several hosts: each run costs ~0.25 s of CPU just to load its
# probe database, which on a busy scanner host slows the sweep more than the probes do.
# nmap's -p is one list for all its targets, so a run also connect-probes every host on
# the other hosts' ports; batches keep that (hosts x union of ports) small.
BATCH_MAX_HOSTS = 32
BATCH_MAX_PROBES = 8192
# Ports (services) one run fingerprints, all at once (--min-parallelism): each holds one
# connection at a time, so this also bounds a run's sockets. 256 keeps a task's nmap runs
# few (the bench lab's 211 ports fit one) and far below a worker's 1024 file descriptors.
BATCH_MAX_SERVICES = 256
# nmap -sV's own service parallelism at -T3 (service_scan.cc): below it, nothing to raise.
NMAP_DEFAULT_PARALLELISM = 20
# "Service scan match (Probe GetRequest matched with GetRequest line 6948): 127.0.0.1:80 is
# http.  Version: |nginx|1.22.1||", or, without product/version/info, "Service scan hard
# match (Probe NULL matched with NULL): 127.0.0.1:22 is ssh" (nmap 7.x, service_scan.cc).
# Soft matches are not final (nmap goes on probing) and are left to the XML.
_TRACE_MATCH = re.compile(
    r"^Service scan (?:hard )?match \(Probe [^()]* matched with [^()]*\): "
    r"(?P<ip>[0-9A-Fa-f:.]+):(?P<port>\d{1,5}) is (?P<ssl>SSL/)?(?P<service>[^\s.|]+)"
    r"(?:\.  Version: \|(?P<product>[^|]*)\|(?P<version>[^|]*)\|(?P<extrainfo>.*)\|)?\s*$"
)
# NSE scripts a caller may ask for (PoC checks): read-only ones from nmap's "safe"
# category that only ask a service about itself. Anything else is refused by name, so no
# intrusive, brute-force or file-writing script (or a path, or a category) gets on argv.
NSE_ALLOWLIST = frozenset(
    {
        "ftp-anon",
        "http-ls",
        "memcached-info",
        "mongodb-databases",
        "mongodb-info",
        "redis-info",
        "rsync-list-modules",
        "docker-version",
    }
)


def build_argv(
    *,
    ports: Iterable[int],
    timeout: float,
    ip: IPLike | None = None,
    ips: Iterable[IPLike] = (),
    intensity: int | None = None,
    proto: str = "tcp",
    scripts: Iterable[str] = (),
    parallelism: int | None = None,
    xml_path: Path | None = None,
    datadir: Path | None = None,
) -> list[str]:
    """The nmap command line for one host (ip) or several of one IP version (ips);
    scripts: NSE script names from NSE_ALLOWLIST only. parallelism: ports probed at once
    (--min-parallelism). xml_path: an absolute path (a file of our own temporary directory)
    for the XML report, which then leaves stdout to --version-trace's match lines.
    datadir: a folder of nmap data files read before nmap's own (nmap_probes.datadir)."""
    addresses = _check_ips([ip] if ip is not None else ips)
    port_list = _check_port_list(ports)
    check_number("timeout", timeout, 1, 24 * 3600)
    if intensity is not None:
        check_number("intensity", intensity, 0, 9, integer=True)
    if proto not in ("tcp", "udp"):
        raise EngineError(f"protocol must be tcp or udp, got {proto!r}")
    if parallelism is not None:
        check_number("parallelism", parallelism, 1, BATCH_MAX_SERVICES, integer=True)
    if xml_path is not None and not (
        isinstance(xml_path, Path) and xml_path.is_absolute() and ".." not in xml_path.parts
    ):
        raise EngineError("the XML report path must be an absolute pathlib.Path")
    if datadir is not None and not (isinstance(datadir, Path) and datadir.is_absolute()):
        raise EngineError("the nmap data folder must be an absolute pathlib.Path")
    if isinstance(scripts, str | bytes):
        raise EngineError("scripts must be a list of NSE script names")
    scripts = list(dict.fromkeys(scripts))
    refused = [name for name in scripts if name not in NSE_ALLOWLIST]
    if refused:
        raise EngineError(f"NSE script(s) not on the allowlist: {', '.join(map(repr, refused))}")
    argv = [shutil.which("nmap") or "nmap"]
    if addresses[0].version == 6:
        argv.append("-6")
    # -sT: a connect scan of the few known-open ports costs nothing extra, needs no root,
    # and -sV connects anyway. -Pn: the sweep already saw the host answer.
    argv += ["-sU" if proto == "udp" else "-sT", "-sV", "-Pn", "-n"]
    if datadir is not None:
        argv += ["--datadir", str(datadir)]
    if intensity is not None:
        argv += ["--version-intensity", str(intensity)]
    if parallelism is not None and parallelism > NMAP_DEFAULT_PARALLELISM:
        argv += ["--min-parallelism", str(parallelism)]
    # All hosts in one group, so that they run side by side within --host-timeout.
    if scripts:
        argv += ["--script", ",".join(sorted(scripts))]
    argv += ["--min-hostgroup", str(len(addresses))]
    argv += ["--host-timeout", f"{int(timeout * 1000)}ms", "-p", _format_port_list(port_list)]
    if xml_path is None:
        argv += ["-oX", "-"]
    else:
        argv += ["--version-trace", "-oX", str(xml_path)]
    argv += ["--", *(str(address) for address in addresses)]
    return argv


@dataclass(frozen=True)
class FingerprintOptions:
    """How to fingerprint: each port's budget in seconds (nmap's --host-timeout; all ports
    of a run are probed at once), the protocol (-sT or -sU), nmap's --version-intensity (its
    own default when None), the nice level of the nmap process (0-19), how long nmap
    listens for a banner before its first request and then for an answer to two empty lines
    (nmap_probes; nmap's own 6000 and 5000 ms by default). Checked once, here."""

    timeout: float
    proto: str = "tcp"
    intensity: int | None = None
    nice: int = 0
    null_wait_ms: int = nmap_probes.NMAP_NULL_WAIT_MS
    generic_lines_wait_ms: int = nmap_probes.NMAP_DEFAULT_WAIT_MS

    def __post_init__(self) -> None:
        check_number("timeout", self.timeout, 1, 24 * 3600)
        if self.proto not in ("tcp", "udp"):
            raise EngineError(f"protocol must be tcp or udp, got {self.proto!r}")
        if self.intensity is not None:
            check_number("intensity", self.intensity, 0, 9, integer=True)
        check_number("nice", self.nice, 0, 19, integer=True)
        check_number("null_wait_ms", self.null_wait_ms, 0, 600_000, integer=True)
        check_number("generic_lines_wait_ms", self.generic_lines_wait_ms, 0, 600_000, integer=True)

    @property
    def probe_waits(self) -> dict[str, int]:
        """The waits of nmap's first two probes, by probe name (nmap_probes.datadir)."""
        return {"NULL": self.null_wait_ms, "GenericLines": self.generic_lines_wait_ms}


def fingerprint(*, ip: IPLike, ports: list[int], options: FingerprintOptions) -> HostResult:
    """Run nmap -sV on ip's open ports; a timeout or error gives status "unknown"."""
    address = str(_check_ip(ip))
    return fingerprint_many(hosts={address: ports}, options=options)[address]


def fingerprint_many(
    *,
    hosts: Mapping[str, Iterable[int]],
    options: FingerprintOptions,
    on_finding: Callable[[Finding], None] | None = None,
    on_first_run: Callable[[dict[str, HostResult]], None] | None = None,
) -> dict[str, HostResult]:
    """nmap -sV over several hosts (see batches()); a result per host, keyed by IP.

    One nmap run, and a short second one for the named ports of a host that timed out.
    options.timeout is each port's budget: all ports of the run are probed at once.
    on_finding, if given, gets each port nmap names the moment it prints the match (from the
    thread that runs nmap; it must not block), before the run ends; the results then repeat
    and complete them. Each host's findings are limited to the ports asked for it. A host
    nmap gave up on (timeout) keeps the ports named before it, is "unknown", and its other
    ports unnamed; every host of a run that failed is "unknown", with the reason in error.
    on_first_run, if given, gets the results as they stand before that second run (the
    ports left unnamed are settled then).
    """
    if not isinstance(options, FingerprintOptions):
        raise EngineError("options must be a FingerprintOptions")
    wanted = {str(_check_ip(ip)): set(_check_port_list(ports)) for ip, ports in hosts.items()}
    if not wanted:
        raise EngineError("no hosts to fingerprint")
    datadir = nmap_probes.datadir(options.probe_waits)
    results = _fingerprint_run(wanted, options, datadir=datadir, on_finding=on_finding)
    if on_first_run is not None:
        on_first_run({ip: replace(result) for ip, result in results.items()})
    # A host nmap gave up on has no ports in the XML: the ports it had named keep only what
    # the trace line says, without CPE or what nmap's version scripts add after the probes
    # ("RabbitMQ 3.10.8", not the probe's "Advanced Message Queue Protocol"; measured on
    # this machine's rabbitmq next to a silent port). A name that depends on which other
    # ports a host has would be a "service changed" event: so one more run over just those
    # ports, which answered. Its budget is the whole port timeout all the same: nmap's
    # version scripts run after all probes, inside --host-timeout (6 such ports here took
    # 17.6 s, their last one named at 10.3 s: "time to name + 10 s" lost the XML again).
    again = {
        ip: {f.port for f in result.findings}
        for ip, result in results.items()
        if result.error == "timeout" and result.findings
    }
    if again:
        complete = _fingerprint_run(again, options, datadir=datadir)
        for ip, result in complete.items():
            better = {f.port: f for f in result.findings if f.has_fingerprint}
            results[ip].findings = [better.get(f.port, f) for f in results[ip].findings]
    return results


def _fingerprint_run(
    wanted: dict[str, set[int]],
    options: FingerprintOptions,
    *,
    datadir: Path | None,
    on_finding: Callable[[Finding], None] | None = None,
) -> dict[str, HostResult]:
    """fingerprint_many's one nmap process."""
    timeout, proto = options.timeout, options.proto
    union = set().union(*wanted.values())
    services = sum(len(ports) for ports in wanted.values())
    streamed: dict[tuple[str, int], Finding] = {}

    def on_line(stream: str, line: str) -> None:
        if stream != "stdout":
            return
        finding = parse_trace_line(line, proto=proto)
        if finding is None or finding.port not in wanted.get(finding.ip, ()):
            return
        streamed[(finding.ip, finding.port)] = finding
        if on_finding is not None:
            on_finding(finding)

    def unknown(error: str) -> dict[str, HostResult]:
        # Whatever nmap named before it failed stays named.
        return {
            ip: HostResult(
                ip=ip,
                status="unknown",
                error=error,
                findings=[f for (host, _), f in sorted(streamed.items()) if host == ip],
            )
            for ip in wanted
        }

    with tempfile.TemporaryDirectory(prefix="portmon-nmap-") as tmp:
        xml_path = Path(tmp) / "report.xml"
        argv = build_argv(
            ips=list(wanted),
            ports=union,
            timeout=timeout,
            intensity=options.intensity,
            proto=proto,
            parallelism=min(services, BATCH_MAX_SERVICES),
            xml_path=xml_path,
            datadir=datadir,
        )
        try:
            result = run_process(
                argv, timeout=timeout + PROCESS_MARGIN, nice=options.nice, on_line=on_line
            )
        except EngineError as exc:  # EngineTimeout included
            return unknown(str(exc))
        if result.returncode != 0:
            # --version-trace adds nsock's trace to stderr: the error is the last other line.
            lines = [x for x in result.stderr.splitlines() if x.strip() and "NSOCK" not in x]
            return unknown(f"nmap failed: {(lines or [f'exit code {result.returncode}'])[-1]}")
        try:
            parsed = {host.ip: host for host in parse_xml(xml_path.read_text())}
        except (OSError, EngineError) as exc:
            return unknown(str(exc))
    results = {}
    for ip, ports in wanted.items():
        host = parsed.get(ip)
        if host is None:
            host = HostResult(ip=ip, status="unknown", error="nmap reported nothing")
        found = {f.port: f for f in host.findings if f.port in ports and f.proto == proto}
        for (streamed_ip, port), finding in streamed.items():
            # A timed-out host's XML has no ports: what nmap named before stays named.
            if streamed_ip == ip and not found.get(port, Finding(ip, port)).has_fingerprint:
                found[port] = finding
        host.findings = [found[port] for port in sorted(found)]
        if host.status == "unknown" and not host.error:
            host.error = "nmap host timeout"
        results[ip] = host
    return results


def parse_trace_line(line: str, *, proto: str = "tcp") -> Finding | None:
    """A port nmap has just named, from one --version-trace line; None for any other line."""
    match = _TRACE_MATCH.match(line)
    if match is None or match["service"] == "ssl" and not match["ssl"]:
        # "ssl" alone: nmap found a TLS tunnel and now probes again through it.
        return None
    try:
        ip = str(ipaddress.ip_address(match["ip"]))
    except ValueError:
        return None
    port = int(match["port"])
    if not 1 <= port <= 65535:
        return None
    service = match["service"]
    return Finding(
        ip=ip,
        port=port,
        proto=proto,
        service=f"ssl/{service}" if match["ssl"] else service,
        product=match["product"] or "",
        version=match["version"] or "",
        extrainfo=match["extrainfo"] or "",
    )


def batches(
    hosts: Mapping[str, Iterable[int]],
    *,
    max_hosts: int = BATCH_MAX_HOSTS,
    max_probes: int = BATCH_MAX_PROBES,
    max_services: int = BATCH_MAX_SERVICES,
) -> list[dict[str, list[int]]]:
    """Group hosts into nmap runs: one IP version per run, at most max_hosts hosts, at most
    max_probes connects (hosts x union of their ports) and at most max_services ports to
    name (a host with more has its ports split over runs of their own)."""
    checked = []
    for ip, ports in hosts.items():
        address, ports = _check_ip(ip), sorted(set(ports))
        for start in range(0, len(ports), max_services):
            checked.append((address, ports[start : start + max_services]))
    groups: list[dict[str, list[int]]] = []
    for version in (4, 6):
        current: dict[str, list[int]] = {}
        union: set[int] = set()
        services = 0
        for address, ports in sorted(a for a in checked if a[0].version == version):
            grown = union.union(ports)
            if current and (
                len(current) >= max_hosts
                or (len(current) + 1) * len(grown) > max_probes
                or services + len(ports) > max_services
                or str(address) in current
            ):
                groups.append(current)
                current, grown, services = {}, set(ports), 0
            current[str(address)] = ports
            union = grown
            services += len(ports)
        if current:
            groups.append(current)
    return groups


def parse_xml(text: str) -> list[HostResult]:
    """Parse nmap XML (ours or an imported file) into one HostResult per host, open ports only.

    A host nmap gave up on (timedout="true") or did not see up is "unknown", not "up".
    Truncated XML (nmap killed) is read as far as it goes.
    """
    if not isinstance(text, str) or "<nmaprun" not in text:
        raise EngineError("not an nmap XML report (no <nmaprun> element)")
    try:
        report = NmapParser.parse_fromstring(text)
    except (NmapParserException, ET.ParseError) as exc:
        # A killed nmap leaves the report cut anywhere: keep the hosts it finished.
        cut = text.rfind("</host>")
        complete = text[: cut + len("</host>")] + "\n</nmaprun>\n" if cut >= 0 else ""
        try:
            report = NmapParser.parse_fromstring(complete)
        except (NmapParserException, ET.ParseError):
            raise EngineError(f"cannot read nmap XML: {exc}") from None
    timed_out = _timed_out_addresses(text)
    results = []
    for host in report.hosts:
        ip = host.address
        try:
            ip = str(ipaddress.ip_address(ip))
        except ValueError:
            continue  # a MAC-only or malformed host entry: nothing we can record
        findings = []
        for svc in host.services:
            if svc.state != "open":
                continue
            info = svc.service_dict
            name = info.get("name", "")
            tunnel = info.get("tunnel", "") or svc.tunnel
            findings.append(
                Finding(
                    ip=ip,
                    port=int(svc.port),
                    proto=svc.protocol,
                    service=f"{tunnel}/{name}" if tunnel and name else name,
                    product=info.get("product", ""),
                    version=info.get("version", ""),
                    extrainfo=info.get("extrainfo", ""),
                    cpe=" ".join(info.get("cpelist", [])),
                )
            )
        if ip in timed_out:
            # nmap drops a timed-out host's port table; whatever is left is not the truth.
            results.append(HostResult(ip=ip, status="unknown", findings=findings, error="timeout"))
        elif host.is_up():
            results.append(HostResult(ip=ip, status="up", findings=findings))
        else:
            results.append(HostResult(ip=ip, status="unknown", findings=findings))
    return results


def _timed_out_addresses(text: str) -> set[str]:
    # python-libnmap drops the host element's timedout attribute, so read it ourselves.
    # Parsing is event-driven so that a truncated report still yields the hosts before the cut.
    found: set[str] = set()
    parser: ET.XMLPullParser[ET.Element] = ET.XMLPullParser(events=("end",))
    try:
        parser.feed(text)
        events = list(parser.read_events())
    except ET.ParseError:
        events = []
        try:
            events = list(parser.read_events())
        except ET.ParseError:
            pass
    for event in events:
        # ("end", element); typeshed also allows start-ns's (prefix, uri) and a bare queue.
        element = event[1] if isinstance(event, tuple) and len(event) == 2 else None
        if not isinstance(element, ET.Element):
            continue
        if element.tag == "host" and element.get("timedout") == "true":
            for addr in element.iter("address"):
                if addr.get("addrtype") in ("ipv4", "ipv6"):
                    found.add(str(ipaddress.ip_address(addr.get("addr", ""))))
    return found


def _check_ips(ips: Iterable[IPLike]) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    if isinstance(ips, str | bytes) or not isinstance(ips, Iterable):
        raise EngineError("targets must be a list of IP addresses")
    addresses = list(dict.fromkeys(_check_ip(ip) for ip in ips))
    if not addresses:
        raise EngineError("no hosts to fingerprint")
    if len({address.version for address in addresses}) > 1:
        raise EngineError("one nmap run takes IPv4 or IPv6 addresses, not both")
    return addresses


def _check_ip(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | str,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if isinstance(ip, str):
        try:
            ip = ipaddress.ip_address(ip)
        except ValueError:
            raise EngineError(f"{ip!r} is not an IP address") from None
    if not isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
        raise EngineError(f"{ip!r} is not an IP address")
    if getattr(ip, "scope_id", None):
        raise EngineError(f"{ip} has an interface scope; not supported")
    return ip


def _check_port_list(ports: Iterable[int]) -> list[int]:
    if isinstance(ports, str | bytes) or not isinstance(ports, Iterable):
        raise EngineError("ports must be a list of port numbers")
    checked = set()
    for port in ports:
        if not (isinstance(port, int) and not isinstance(port, bool) and 1 <= port <= 65535):
            raise EngineError(f"port {port!r} is outside 1-65535")
        checked.add(port)
    if not checked:
        raise EngineError("no ports to fingerprint")
    return sorted(checked)


def _format_port_list(ports: list[int]) -> str:
    parts, start, prev = [], ports[0], ports[0]
    following: list[int | None] = [*ports[1:], None]
    for port in following:
        if port is not None and port == prev + 1:
            prev = port
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if port is not None:
            start = prev = port
    return ",".join(parts)
