"""nmap adapter: service fingerprints (-sV) on ports already known to be open.

Why not python-libnmap's NmapProcess (0.7.3): it joins options and targets into one string
and shlex-splits it. There is no shell, but its CVE-2022-30284 target check allows spaces, so
a list target "127.0.0.1 -oN /tmp/x" still becomes the options `-oN /tmp/x` (checked with
get_command_line). It also has no timeout, no process group, and reads stderr only after
exit (a chatty nmap can block on a full pipe). So nmap runs through our run_process with an
argv list (target after "--", from an ipaddress object), and python-libnmap is used for
what it does well: NmapParser.
"""

import ipaddress
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from libnmap.parser import NmapParser, NmapParserException

from scanner.findings import Finding

from .base import EngineError, EngineTimeout, check_number, run_process

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


def build_argv(
    *,
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | str,
    ports: Iterable[int],
    timeout: float,
    intensity: int | None = None,
    proto: str = "tcp",
) -> list[str]:
    """The nmap command line, from validated values only."""
    address = _check_ip(ip)
    port_list = _check_port_list(ports)
    check_number("timeout", timeout, 1, 24 * 3600)
    if intensity is not None:
        check_number("intensity", intensity, 0, 9, integer=True)
    if proto not in ("tcp", "udp"):
        raise EngineError(f"protocol must be tcp or udp, got {proto!r}")
    argv = [shutil.which("nmap") or "nmap"]
    if address.version == 6:
        argv.append("-6")
    # -sT: a connect scan of the few known-open ports costs nothing extra, needs no root,
    # and -sV connects anyway. -Pn: the sweep already saw the host answer.
    argv += ["-sU" if proto == "udp" else "-sT", "-sV", "-Pn", "-n"]
    if intensity is not None:
        argv += ["--version-intensity", str(intensity)]
    argv += ["--host-timeout", f"{int(timeout * 1000)}ms", "-p", _format_port_list(port_list)]
    argv += ["-oX", "-", "--", str(address)]
    return argv


def fingerprint(
    *,
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | str,
    ports: list[int],
    timeout: float,
    intensity: int | None = None,
    proto: str = "tcp",
) -> HostResult:
    """Run nmap -sV on ip's open ports; a timeout or error gives status "unknown"."""
    argv = build_argv(ip=ip, ports=ports, timeout=timeout, intensity=intensity, proto=proto)
    address = str(_check_ip(ip))
    try:
        result = run_process(argv, timeout=timeout + PROCESS_MARGIN)
    except EngineTimeout as exc:
        return HostResult(ip=address, status="unknown", error=str(exc))
    except EngineError as exc:
        return HostResult(ip=address, status="unknown", error=str(exc))
    if result.returncode != 0:
        message = result.stderr.strip().splitlines()[-1:] or [f"exit code {result.returncode}"]
        return HostResult(ip=address, status="unknown", error=f"nmap failed: {message[0]}")
    try:
        hosts = parse_xml(result.stdout)
    except EngineError as exc:
        return HostResult(ip=address, status="unknown", error=str(exc))
    for host in hosts:
        if host.ip == address:
            wanted = set(ports)
            host.findings = [f for f in host.findings if f.port in wanted and f.proto == proto]
            if host.status == "unknown" and not host.error:
                host.error = "nmap host timeout"
            return host
    return HostResult(ip=address, status="unknown", error="nmap reported nothing for this host")


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
    parser = ET.XMLPullParser(events=("end",))
    try:
        parser.feed(text)
        events = list(parser.read_events())
    except ET.ParseError:
        events = []
        try:
            events = list(parser.read_events())
        except ET.ParseError:
            pass
    for _event, element in events:
        if element.tag == "host" and element.get("timedout") == "true":
            for addr in element.iter("address"):
                if addr.get("addrtype") in ("ipv4", "ipv6"):
                    found.add(str(ipaddress.ip_address(addr.get("addr", ""))))
    return found


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
    for port in ports[1:] + [None]:  # type: ignore[list-item]
        if port is not None and port == prev + 1:
            prev = port
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if port is not None:
            start = prev = port
    return ",".join(parts)
