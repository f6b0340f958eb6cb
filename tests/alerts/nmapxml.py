"""Write nmap XML (-oX) files as nmap does, for import timelines and the generated month."""

from collections.abc import Iterable, Mapping
from xml.sax.saxutils import quoteattr

# (port, service, product) of an open TCP port.
Open = tuple[int, str, str]


def nmap_xml(
    *,
    targets: str | None,
    ports: str | None,
    hosts: Mapping[str, Iterable[Open]],
    down: Iterable[str] = (),
    start: int = 1781510400,
) -> str:
    """A report of `nmap -sS -sV -p PORTS TARGETS`: hosts with their open ports; `down`
    hosts as <host> elements with status down (what nmap writes for listed hosts with -v).
    targets=None: a command line that does not name them (-iL); ports=None: no <scaninfo>.
    start: when the scan ran (Unix time; the default is 2026-06-15 08:00 UTC)."""
    args = f"nmap -sS -sV -p {ports or '-'} -oX - " + (targets if targets else "-iL hosts.txt")
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        "<!DOCTYPE nmaprun>",
        f'<nmaprun scanner="nmap" args={quoteattr(args)} start="{int(start)}" version="7.93">',
    ]
    if ports:
        lines.append(f'<scaninfo type="syn" protocol="tcp" numservices="1" services="{ports}"/>')
    for ip in down:
        lines.append(f'<host><status state="down"/><address addr="{ip}" addrtype="ipv4"/></host>')
    for ip, opened in hosts.items():
        lines.append(f'<host><status state="up"/><address addr="{ip}" addrtype="ipv4"/><ports>')
        for port, service, product in opened:
            # No <service> element when nmap ran without -sV (nothing fingerprinted).
            info = (
                f"<service name={quoteattr(service)} product={quoteattr(product)}/>"
                if service or product
                else ""
            )
            lines.append(f'<port protocol="tcp" portid="{port}"><state state="open"/>{info}</port>')
        lines.append("</ports></host>")
    lines.append("</nmaprun>")
    return "\n".join(lines) + "\n"
