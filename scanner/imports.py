"""Streaming readers for imported results: nmap XML (-oX) and masscan JSON (-oJ).

Imported files come from elsewhere and may be hostile or broken. They are read a chunk at a
time (memory does not grow with the file), every value is checked for its type and range,
and every problem is an ImportFileError with a one-line message; nothing is guessed.
nmap.parse_xml and masscan.parse_json stay the tolerant readers of our own engines' output.
"""

import codecs
import ipaddress
import json
import re
import shlex
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import BinaryIO, NoReturn
from xml.parsers import expat

from scanner.findings import Finding
from scanner.scope import Scope, normalise_network

# Bytes per read: big enough that per-chunk overhead vanishes, small enough to stay flat.
CHUNK_BYTES = 256 * 1024
# masscan records nest 4 deep (record, ports, port, service); nmap XML about 8 (script
# tables). The limits refuse hostile nesting long before it costs a recursion or memory.
MAX_JSON_DEPTH = 16
MAX_XML_DEPTH = 64
# One masscan record is a line of ~150 bytes (banners a few KiB); a bigger one is not masscan.
MAX_RECORD_CHARS = 1024 * 1024
# expat holds a whole token (tag, comment, attribute) in memory before reporting it: a file
# that goes this far without one ended is refused instead of growing memory with the file.
MAX_XML_TOKEN_BYTES = 8 * 1024 * 1024
PORT_PROTOCOLS = ("tcp", "udp")
# Protocols nmap or masscan report that Portmon does not track: counted and skipped.
UNTRACKED_PROTOCOLS = ("sctp", "icmp", "ip", "arp")
# Column widths of FingerprintFields: MariaDB refuses a longer value, so text is clipped.
FIELD_LIMITS = {"service": 100, "product": 200, "version": 100, "extrainfo": 200, "cpe": 500}
TRUNCATED_ERROR = "truncated input"
# Unix times in files: up to the year 5138 (a bigger one is garbage, not a date).
MAX_UNIX_TIME = 10**11


class ImportFileError(ValueError):
    """A file that cannot be imported; the message is one line for the user."""


@dataclass
class ImportReport:
    """What a read saw besides the findings: filled in while the findings are consumed."""

    format: str = ""
    truncated: bool = False
    untracked: int = 0
    outside_scope: int = 0
    zones: set[str] = field(default_factory=set)
    # What the scan was asked to cover (nmap): its command line, the <scaninfo services=>
    # port lists, and every <host> element's address, up or down.
    nmap_args: str | None = None
    scan_ports: list[str] = field(default_factory=list)
    # <scaninfo protocol="udp" services=...>: UDP coverage is kept apart (nmap -sU).
    scan_udp_ports: list[str] = field(default_factory=list)
    hosts: set[str] = field(default_factory=set)
    # Ports reported open on any host: what a file without a port list is taken to cover.
    open_ports: set[int] = field(default_factory=set)
    open_udp_ports: set[int] = field(default_factory=set)
    # When the scan ran, by the file (nmap's <nmaprun start=...>, the earliest masscan
    # "timestamp" read so far): the run's time unless the user gives one.
    started: datetime | None = None

    def started_note(self, value: object, where: str) -> None:
        """Note a Unix time from the file (text or integer); refused when it is not one."""
        if isinstance(value, str) and re.fullmatch(r"[0-9]{1,12}", value):
            value = int(value)
        if type(value) is not int or not 0 < value < MAX_UNIX_TIME:
            raise ImportFileError(f"{where}: not a Unix time: {_show(value)}")
        at = datetime.fromtimestamp(value, tz=UTC)
        if self.started is None or at < self.started:
            self.started = at

    @property
    def error(self) -> str:
        return TRUNCATED_ERROR if self.truncated else ""


def findings_read(
    stream: BinaryIO, *, report: ImportReport, allow_truncated: bool = False
) -> Iterator[Finding]:
    """Sniff the format from the first bytes and stream the file's open ports."""
    head = stream.read(CHUNK_BYTES)
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ImportFileError("UTF-16 text; nmap and masscan write UTF-8, convert it first")
    if head.startswith(codecs.BOM_UTF8):
        head = head[len(codecs.BOM_UTF8) :]
    first = head.lstrip(b" \t\r\n")[:1]
    if not first:
        raise ImportFileError("empty file")
    chunks = _chunks(stream, head)
    if first == b"<":
        report.format = "nmap"
        return _nmap_xml(chunks, report=report, allow_truncated=allow_truncated)
    if first == b"[":
        report.format = "masscan"
        return _masscan_json(chunks, report=report, allow_truncated=allow_truncated)
    if first in b'{"0123456789-tfn':
        raise ImportFileError("JSON that is not an array: masscan -oJ writes [ {record}, ... ]")
    raise ImportFileError("not an nmap XML (-oX) or masscan JSON (-oJ) file")


def findings_in_scope(
    findings: Iterable[Finding], *, scope: Scope, report: ImportReport
) -> Iterator[Finding]:
    """Keep findings inside the scope; count the others and note the zones kept ones are in."""
    zones = dict(scope.networks)
    for finding in findings:
        address = ipaddress.ip_address(finding.ip)
        network = scope.network_of(address)
        if network is None or scope.is_excluded(address):
            report.outside_scope += 1
            continue
        report.zones.add(zones[network])
        if finding.proto == "udp":
            report.open_udp_ports.add(finding.port)
        else:
            report.open_ports.add(finding.port)
        yield finding


def ip_check(value: object, where: str) -> str:
    """A canonical address string; IPv4-mapped IPv6 becomes the IPv4 address it maps."""
    if not isinstance(value, str):
        raise ImportFileError(f"{where}: address must be a string, not {_show(value)}")
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise ImportFileError(f"{where}: {_show(value)} is not an IP address") from None
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            raise ImportFileError(f"{where}: {_show(value)} has a zone index")
        if address.ipv4_mapped:
            address = address.ipv4_mapped
    return str(address)


def _chunks(stream: BinaryIO, head: bytes) -> Iterator[bytes]:
    if head:
        yield head
    while chunk := stream.read(CHUNK_BYTES):
        yield chunk


def _show(value: object) -> str:
    """A value for an error message: repr (no newlines), cut short."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _clip(**fields: str) -> dict[str, str]:
    return {name: value[: FIELD_LIMITS[name]] for name, value in fields.items()}


def _untracked_or_refuse(proto: object, where: str, report: ImportReport) -> None:
    if proto in UNTRACKED_PROTOCOLS:
        report.untracked += 1
        return
    raise ImportFileError(f"{where}: protocol must be tcp or udp, not {_show(proto)}")


# --- masscan JSON ---------------------------------------------------------------------------

# A JSON string (its closing quote may be missing when the buffer ends inside it) or a bracket:
# enough to find where a record ends and how deep it nests, without parsing it.
_TOKEN = re.compile(r'"(?:[^"\\]+|\\.)*(")?|[\[\]{}]', re.DOTALL)
_BLANK = re.compile(r"[ \t\r\n]*")
_BLANK_OR_COMMA = re.compile(r"[ \t\r\n,]*")


def _skip(blank: re.Pattern[str], buf: str, pos: int) -> int:
    """The index past the run of `blank` (a pattern that also matches nothing) at pos."""
    match = blank.match(buf, pos)
    return match.end() if match else pos


def _masscan_json(
    chunks: Iterator[bytes], *, report: ImportReport, allow_truncated: bool
) -> Iterator[Finding]:
    decoder = codecs.getincrementaldecoder("utf-8")()
    consumed = 0  # bytes decoded so far, for messages
    buf, pos = "", 0
    eof = False

    def fill() -> bool:
        nonlocal buf, pos, eof, consumed
        if eof:
            return False
        # Keep only what is not consumed yet: memory stays at about a chunk plus a record.
        buf, pos = buf[pos:], 0
        chunk = next(chunks, None)
        try:
            if chunk is None:
                eof = True
                buf += decoder.decode(b"", final=True)
                return False
            buf += decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            raise ImportFileError(f"not UTF-8 text near byte {consumed + exc.start}") from None
        consumed += len(chunk)
        return True

    fill()
    pos = _skip(_BLANK, buf, 0)
    if buf[pos : pos + 1] != "[":  # the sniffer saw "[": only a BOM-less oddity lands here
        raise ImportFileError("masscan JSON must be an array of records")
    pos += 1
    number = 0
    while True:
        pos = _skip(_BLANK_OR_COMMA, buf, pos)
        if pos >= len(buf):
            if fill():
                continue
            _truncated("the JSON array has no closing ]", report, allow_truncated)
            return
        char = buf[pos]
        if char == "]":
            pos += 1
            break
        number += 1
        where = f"record {number}"
        if char != "{":
            raise ImportFileError(f"{where}: expected an object, found {_show(char)}")
        end = _record_end(buf, pos, where)
        while end is None:
            if len(buf) - pos > MAX_RECORD_CHARS:
                raise ImportFileError(f"{where}: longer than {MAX_RECORD_CHARS} characters")
            if not fill():
                _truncated(f"{where} is cut short", report, allow_truncated)
                return
            end = _record_end(buf, pos, where)
        try:
            record = json.loads(buf[pos:end])
        except ValueError as exc:
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            raise ImportFileError(f"{where}: not valid JSON ({reason})") from None
        pos = end
        yield from _masscan_record(record, where, report)
    # After the array: only blank space, however far the file goes on.
    while True:
        pos = _skip(_BLANK, buf, pos)
        if pos < len(buf):
            raise ImportFileError(f"unexpected {_show(buf[pos])} after the closing ]")
        if not fill():
            return


def _record_end(buf: str, start: int, where: str) -> int | None:
    """Index just past the object starting at `start`, or None if the buffer ends first."""
    depth = 0
    for match in _TOKEN.finditer(buf, start):
        token = match.group()
        if token[0] == '"':
            if match.group(1) is None:
                return None
            continue
        if token in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise ImportFileError(f"{where}: nested deeper than {MAX_JSON_DEPTH} levels")
        else:
            depth -= 1
            if depth == 0:
                return match.end()
    return None


def _masscan_record(record: dict, where: str, report: ImportReport) -> Iterator[Finding]:
    if "ip" not in record:
        if set(record) == {"finished"}:  # the end marker some masscan versions write
            return
        raise ImportFileError(f'{where}: no "ip"')
    ip = ip_check(record["ip"], where)
    if "timestamp" in record:
        report.started_note(record["timestamp"], f'{where}: "timestamp"')
    entries = record.get("ports")
    if not isinstance(entries, list):
        raise ImportFileError(f'{where}: "ports" must be a list, not {_show(entries)}')
    for entry in entries:
        if not isinstance(entry, dict):
            raise ImportFileError(f"{where}: a port entry must be an object, not {_show(entry)}")
        status = entry.get("status")
        if status is not None and not isinstance(status, str):
            raise ImportFileError(f'{where}: "status" must be a string, not {_show(status)}')
        proto, port = entry.get("proto"), entry.get("port")
        if proto not in PORT_PROTOCOLS:
            _untracked_or_refuse(proto, where, report)
            continue
        # bool is an int in Python: "port": true must not become port 1.
        if type(port) is not int or not 1 <= port <= 65535:
            raise ImportFileError(f"{where}: port must be an integer 1-65535, not {_show(port)}")
        # Banner entries (--banners) carry "service" and no status: the port's status entry
        # is a record of its own. Closed ports (--show closed) are not findings either.
        if status == "open":
            yield Finding(ip=ip, port=port, proto=proto)


# --- nmap XML -------------------------------------------------------------------------------

_PORT_ID = re.compile(r"[0-9]{1,5}")


@dataclass
class _PortRead:
    """A <port> element as read so far: its attributes, and what its children said (kept
    apart: an attribute named "state" or "service" on <port> is not its <state>)."""

    where: str
    attrs: dict[str, str]
    state: str = ""
    service: dict[str, str] = field(default_factory=dict)
    cpes: list[str] = field(default_factory=list)


class _NmapHandler:
    """expat callbacks: collects one <host> at a time and emits its open ports at </host>."""

    def __init__(self, report: ImportReport, parser: expat.XMLParserType):
        self.report = report
        self.parser = parser
        self.depth = 0
        self.root_closed = False
        self.ready: list[Finding] = []
        self.last_event = 0
        self._reset_host()

    def _reset_host(self) -> None:
        self.in_host = False
        self.addresses: list[str] = []
        self.ports: list[_PortRead] = []
        self.port: _PortRead | None = None
        self.cpe: list[str] | None = None

    def _where(self) -> str:
        return f"line {self.parser.CurrentLineNumber}"

    def doctype(
        self, name: str, system_id: str | None, public_id: str | None, has_internal_subset: bool
    ) -> None:
        # nmap writes a bare <!DOCTYPE nmaprun>. A DTD (internal subset or external id) is
        # how entity bombs and external entities get in: refused, never expanded or fetched.
        if has_internal_subset or system_id or public_id:
            raise ImportFileError(f"{self._where()}: DTDs and entities are not accepted")

    def entity(self, *args: object) -> NoReturn:
        raise ImportFileError(f"{self._where()}: DTDs and entities are not accepted")

    def progress(self, *args: object) -> None:
        self.last_event = self.parser.CurrentByteIndex

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        self.progress()
        self.depth += 1
        if self.depth > MAX_XML_DEPTH:
            raise ImportFileError(f"{self._where()}: nested deeper than {MAX_XML_DEPTH} levels")
        if self.depth == 1:
            if tag != "nmaprun":
                raise ImportFileError(f"not an nmap XML report: root element is <{tag[:40]}>")
            self.report.nmap_args = attrs.get("args")
            if "start" in attrs:
                self.report.started_note(attrs["start"], f"{self._where()}: <nmaprun start>")
            return
        if tag == "host" and self.depth == 2:
            self.in_host = True
        elif tag == "scaninfo" and self.depth == 2:
            if attrs.get("protocol") in PORT_PROTOCOLS and attrs.get("services"):
                if attrs["protocol"] == "udp":
                    self.report.scan_udp_ports.append(attrs["services"])
                else:
                    self.report.scan_ports.append(attrs["services"])
        elif not self.in_host:
            return
        elif tag == "address" and attrs.get("addrtype") in ("ipv4", "ipv6"):
            self.addresses.append(ip_check(attrs.get("addr"), self._where()))
        elif tag == "port":
            if self.port is not None:  # nmap never nests them
                raise ImportFileError(f"{self._where()}: a <port> inside a <port>")
            self.port = _PortRead(where=self._where(), attrs=attrs)
        elif self.port is not None:
            if tag == "state":
                self.port.state = attrs.get("state", "")
            elif tag == "service":
                self.port.service = attrs
            elif tag == "cpe":
                self.cpe = []

    def text(self, data: str) -> None:
        self.progress()
        if self.cpe is not None:
            self.cpe.append(data)

    def end(self, tag: str) -> None:
        self.progress()
        self.depth -= 1
        if self.depth == 0:
            self.root_closed = True
        if not self.in_host:
            return
        if tag == "cpe" and self.cpe is not None:
            if self.port is not None:  # always: <cpe> is read only inside a <port>
                self.port.cpes.append("".join(self.cpe).strip())
            self.cpe = None
        elif tag == "port" and self.port is not None:
            self.ports.append(self.port)
            self.port = None
        elif tag == "host" and self.depth == 1:
            self.ready.extend(self._host_findings())
            if self.addresses:
                self.report.hosts.add(self.addresses[0])
            self._reset_host()

    def _host_findings(self) -> list[Finding]:
        findings = []
        for port in self.ports:
            if port.state != "open":
                continue
            where, proto, portid = port.where, port.attrs.get("protocol"), port.attrs.get("portid")
            if proto not in PORT_PROTOCOLS:
                _untracked_or_refuse(proto, where, self.report)
                continue
            if not (isinstance(portid, str) and _PORT_ID.fullmatch(portid)):
                raise ImportFileError(f"{where}: port must be 1-65535, not {_show(portid)}")
            if not 1 <= int(portid) <= 65535:
                raise ImportFileError(f"{where}: port must be 1-65535, not {_show(portid)}")
            if not self.addresses:
                raise ImportFileError(f"{where}: an open port on a host without an IP address")
            info = port.service
            name, tunnel = info.get("name", ""), info.get("tunnel", "")
            fields = _clip(
                service=f"{tunnel}/{name}" if tunnel and name else name,
                product=info.get("product", ""),
                version=info.get("version", ""),
                extrainfo=info.get("extrainfo", ""),
                cpe=" ".join(port.cpes),
            )
            # The first address is the one nmap scanned (python-libnmap takes it too).
            findings.append(Finding(ip=self.addresses[0], port=int(portid), proto=proto, **fields))
        return findings


def _nmap_xml(
    chunks: Iterator[bytes], *, report: ImportReport, allow_truncated: bool
) -> Iterator[Finding]:
    parser = expat.ParserCreate()
    # Never read parameter entities or an external DTD subset, whatever the document says.
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    handler = _NmapHandler(report, parser)
    parser.StartDoctypeDeclHandler = handler.doctype
    parser.EntityDeclHandler = handler.entity
    parser.UnparsedEntityDeclHandler = handler.entity
    parser.ExternalEntityRefHandler = handler.entity
    parser.StartElementHandler = handler.start
    parser.EndElementHandler = handler.end
    parser.CharacterDataHandler = handler.text
    parser.CommentHandler = handler.progress
    parser.ProcessingInstructionHandler = handler.progress
    parser.buffer_text = True
    fed = 0
    for chunk in chunks:
        _feed(parser, chunk, final=False)
        fed += len(chunk)
        if fed - handler.last_event > MAX_XML_TOKEN_BYTES:
            raise ImportFileError(f"an XML token longer than {MAX_XML_TOKEN_BYTES} bytes")
        yield from handler.ready
        handler.ready.clear()
    if handler.root_closed:
        _feed(parser, b"", final=True)
        return
    if handler.depth == 0:
        raise ImportFileError("not an nmap XML report (no <nmaprun> element)")
    # Hosts already emitted were complete (</host> seen); the one being read is dropped.
    _truncated("the XML ends before </nmaprun>", report, allow_truncated)


def _feed(parser: expat.XMLParserType, data: bytes, *, final: bool) -> None:
    try:
        parser.Parse(data, final)
    except expat.ExpatError as exc:
        reason = expat.ErrorString(exc.code)
        raise ImportFileError(f"line {exc.lineno}: not well-formed XML ({reason})") from None


def _truncated(what: str, report: ImportReport, allow_truncated: bool) -> None:
    if not allow_truncated:
        raise ImportFileError(f"truncated: {what} (--allow-truncated imports it as degraded)")
    report.truncated = True


# --- Coverage: what an imported run scanned -----------------------------------------------

# nmap options that take a value in the next argument (when not attached: -p22, -oX=f).
_NMAP_VALUE_OPTIONS = frozenset(
    """-p -e -S -D -g -b -M -sI -oN -oX -oS -oG -oA -oM -oH --datadir --servicedb
    --versiondb --dns-servers --exclude-ports --top-ports --port-ratio --scanflags
    --max-retries --host-timeout --scan-delay --max-scan-delay --min-rate --max-rate
    --min-hostgroup --max-hostgroup --min-parallelism --max-parallelism --min-rtt-timeout
    --max-rtt-timeout --initial-rtt-timeout --script --script-args --script-args-file
    --script-help --script-timeout --version-intensity --source-port --data --data-string
    --data-length --ip-options --ttl --spoof-mac --proxies --mtu --stylesheet --stats-every
    --resume --adler32 -PS -PA -PU -PY -PO --badsum""".split()
)
# Options whose targets the file does not show (a list file, random hosts, exclusions).
_NMAP_HIDDEN_TARGETS = frozenset({"-iL", "-iR", "--exclude", "--excludefile", "--resume"})
_OCTET_RANGE = re.compile(r"((?:\d{1,3}\.){3})(\d{1,3})-(\d{1,3})")


class CoverageError(ValueError):
    """What an import covers cannot be told; the message says what to pass."""


Networks = list[ipaddress.IPv4Network | ipaddress.IPv6Network]


def coverage_targets_parse(text: str) -> Networks:
    """IPs, CIDRs and A-B ranges (comma or space separated) as networks; host names and
    anything else raise CoverageError (nothing is resolved). No size limit: a covered /64
    is only compared with, never scanned."""
    networks: Networks = []
    for token in re.split(r"[,\s]+", text.strip(), flags=re.A):
        if not token:
            continue
        try:
            if "-" in token and "/" not in token:
                first, last = (ipaddress.ip_address(end) for end in token.split("-", 1))
                networks.extend(ipaddress.summarize_address_range(first, last))
            else:
                networks.append(ipaddress.ip_network(token, strict=True))
        except (ValueError, TypeError):
            raise CoverageError(
                f"{_show(token)} is not an IP address, CIDR or A-B range (names are not resolved)"
            ) from None
    if not networks:
        raise CoverageError("no targets given")
    return [normalise_network(n) for n in networks]


def nmap_args_targets(args: str | None) -> Networks | None:
    """The networks an nmap command line names as targets; None when it does not say
    (no command line, -iL/-iR/--exclude, a host name, a form this reader does not know)."""
    if not args:
        return None
    try:
        tokens = shlex.split(args)
    except ValueError:
        return None
    networks: Networks = []
    skip = True  # the first token is the program
    for token in tokens:
        if skip:
            skip = False
            continue
        if token.startswith("-"):
            name = token.partition("=")[0]
            if name in _NMAP_HIDDEN_TARGETS or token in _NMAP_HIDDEN_TARGETS:
                return None
            skip = token in _NMAP_VALUE_OPTIONS
            continue
        octets = _OCTET_RANGE.fullmatch(token)
        if octets:  # nmap's 198.18.0.1-20: the last octet's range
            token = f"{octets[1]}{octets[2]}-{octets[1]}{octets[3]}"
        try:
            networks.extend(coverage_targets_parse(token))
        except CoverageError:
            return None
    return networks or None


def targets_within(networks: Networks, scope: Scope) -> Networks:
    """The parts of `networks` inside the scope's networks (exclusions are never scanned by
    Portmon, so nothing in them is ever tracked either)."""
    kept = []
    for network in networks:
        for inside, _zone in scope.networks:
            if _subnet_of(network, inside):
                kept.append(network)
            elif _subnet_of(inside, network):
                kept.append(inside)
    v4 = ipaddress.collapse_addresses(n for n in kept if n.version == 4)
    v6 = ipaddress.collapse_addresses(n for n in kept if n.version == 6)
    return [*v4, *v6]


def _subnet_of(
    a: ipaddress.IPv4Network | ipaddress.IPv6Network,
    b: ipaddress.IPv4Network | ipaddress.IPv6Network,
) -> bool:
    """a inside b; False across IP versions."""
    if isinstance(a, ipaddress.IPv4Network) and isinstance(b, ipaddress.IPv4Network):
        return a.subnet_of(b)
    if isinstance(a, ipaddress.IPv6Network) and isinstance(b, ipaddress.IPv6Network):
        return a.subnet_of(b)
    return False


def import_coverage(
    report: ImportReport, *, scope: Scope, targets: str = "", ports: str = ""
) -> "ImportCoverage":
    """(targets, ports) an imported file covered, for ScanRun.targets / ports (and, as
    .udp_ports, the UDP ports of nmap's <scaninfo protocol="udp">, for ScanRun.udp_ports).

    Targets: --targets, else the nmap command line's targets, else every <host> element
    (up or down) of an nmap file; a masscan file names none, so --targets is required.
    Ports: --ports, else nmap's <scaninfo services=...>, else the ports reported open (a
    port no host had open is then never counted as missed: no false "closed").
    Both are kept inside the scope. Raises CoverageError when the targets are unknown.
    """
    from scanner.targets import format_ports, format_targets, parse_ports

    if targets:
        networks = coverage_targets_parse(targets)
    elif report.format == "nmap":
        named = nmap_args_targets(report.nmap_args)
        networks = named if named is not None else [ipaddress.ip_network(ip) for ip in report.hosts]
    else:
        raise CoverageError(MASSCAN_TARGETS_REQUIRED)
    covered = targets_within(networks, scope)
    if ports:
        port_text = format_ports(parse_ports(ports))
    elif report.scan_ports:
        port_text = format_ports(parse_ports(",".join(report.scan_ports)))
    else:
        port_text = ",".join(str(p) for p in sorted(report.open_ports))
    if report.scan_udp_ports:
        udp_text = format_ports(parse_ports(",".join(report.scan_udp_ports)))
    else:
        udp_text = ",".join(str(p) for p in sorted(report.open_udp_ports))
    return ImportCoverage(format_targets(covered), port_text, udp_text)


class ImportCoverage(tuple[str, str]):
    """(targets, TCP ports, UDP ports) an imported file covered; unpacks as the first two."""

    udp_ports: str

    def __new__(cls, targets: str, ports: str, udp_ports: str = "") -> "ImportCoverage":
        instance = super().__new__(cls, (targets, ports))
        instance.udp_ports = udp_ports
        return instance


MASSCAN_TARGETS_REQUIRED = (
    "a masscan file does not say what it scanned: pass --targets CIDR[,CIDR...] "
    "(and --ports SPEC), or absent hosts would never count as missed"
)
