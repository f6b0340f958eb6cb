"""manage.py poc IP:PORT [--udp] [--check NAME] [--json]: run PoC checks now, in this process.

Same path as chained checks (scope guard, a recorded result, findings raised or fixed);
exit 0 whatever the verdicts, 1 on refused input or a check that reached no verdict.
"""

import ipaddress
import json
import re
import uuid

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from poc.checks import checks_for, checks_load
from poc.models import PocCheck, PocReason
from poc.services.queue import PocTarget, pocs_queue
from poc.services.runs import poc_run
from scanner.models import Host, Port
from scanner.services.scope import scope_load

_ENDPOINT = re.compile(
    r"\[(?P<v6>[0-9A-Fa-f:.]+)\]:(?P<p6>[0-9]{1,5})|(?P<v4>[0-9.]+):(?P<p4>[0-9]{1,5})"
)


def parse_endpoint(text: str) -> tuple[str, int]:
    """'198.18.0.5:6379' or '[2001:db8::5]:6379' -> (ip, port); CommandError otherwise."""
    match = _ENDPOINT.fullmatch(text.strip())
    if not match:
        raise CommandError(f"{text!r} is not IP:PORT (IPv6 as [ADDRESS]:PORT)")
    ip_text = match["v6"] or match["v4"]
    port_text = match["p6"] or match["p4"]
    try:
        ip = ipaddress.ip_address(ip_text)
    except ValueError:
        raise CommandError(f"{ip_text!r} is not an IP address") from None
    if ip.version == 4 and any(
        len(part) > 1 and part.startswith("0") for part in ip_text.split(".")
    ):
        raise CommandError(f"{ip_text!r}: leading zeros are ambiguous; write plain decimal")
    port = int(port_text)
    if port_text.startswith("0") or not 1 <= port <= 65535:
        raise CommandError(f"port {port_text!r} is not a number 1-65535")
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip), port


class Command(BaseCommand):
    help = "Run PoC checks against IP:PORT now (inside scope only) and print the verdicts."

    def add_arguments(self, parser):
        parser.add_argument("endpoint", help="IP:PORT, IPv6 as [ADDRESS]:PORT")
        parser.add_argument("--check", help="one check by name (default: all that apply)")
        parser.add_argument("--udp", action="store_true", help="the port is UDP (e.g. SNMP 161)")
        parser.add_argument("--json", action="store_true", help="print a JSON array")

    def handle(self, *args, **options):
        ip, port = parse_endpoint(options["endpoint"])
        proto = "udp" if options["udp"] else "tcp"
        scope = scope_load()
        address = ipaddress.ip_address(ip)
        if not scope.allows(address):
            raise CommandError(f"{ip} is not inside a network in scope (or is excluded)")
        checks = checks_load()
        if options["check"]:
            if options["check"] not in checks:
                raise CommandError(
                    f"unknown check {options['check']!r}; known: {', '.join(sorted(checks))}"
                )
            if checks[options["check"]].proto != proto:
                raise CommandError(
                    f"{options['check']} is a {checks[options['check']].proto} check"
                    + ("" if options["udp"] else "; add --udp")
                )
            names = [options["check"]]
        else:
            host = Host.objects.filter(ip=ip).first()
            service = (
                Port.objects.filter(host=host, proto=proto, port=port)
                .values_list("service", flat=True)
                .first()
                if host
                else ""
            )
            names = [c.name for c in checks_for(service=service or "", port=port, proto=proto)]
            if not names:
                raise CommandError(
                    f"no check applies to {ip}:{port} (service {service or 'unknown'}); "
                    f"name one with --check ({', '.join(sorted(checks))})"
                )
        network = scope.network_of(address)
        with transaction.atomic():
            host, _ = Host.objects.get_or_create(ip=ip)
            if host.network_id is None:
                from scanner.models import Network

                host.network = Network.objects.filter(cidr=str(network)).first()
                host.save(update_fields=["network"])
        rows, failed = [], False
        for name in names:
            ids = pocs_queue(
                targets=[PocTarget(host.pk, proto, port, name)], reason=PocReason.MANUAL
            )
            if not ids:
                raise CommandError(f"{name} on {ip}:{port} is already queued or running")
            result = poc_run(check_id=ids[0], token=uuid.uuid4().hex)
            if result is None:
                run = PocCheck.objects.get(pk=ids[0])
                failed = True
                self.stderr.write(f"{name}: no verdict ({run.state}): {run.error}")
                continue
            rows.append(
                {
                    "ip": ip,
                    "port": port,
                    "check": name,
                    "vulnerable": result.vulnerable,
                    "severity": result.severity,
                    "title": result.title,
                    "evidence": result.evidence,
                }
            )
        if options["json"]:
            self.stdout.write(json.dumps(rows, indent=2))
        else:
            for row in rows:
                verdict = "VULNERABLE" if row["vulnerable"] else "not vulnerable"
                self.stdout.write(
                    f"{row['check']}: {verdict} [{row['severity']}] {row['title']}\n"
                    + "".join(f"    {line}\n" for line in row["evidence"].splitlines())
                )
        if failed:
            raise CommandError("some checks reached no verdict (see above)")
