"""manage.py scan_import FILE [--at ISO-TIME]: record an nmap XML or masscan JSON file as a run."""

import ipaddress
from datetime import datetime
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from scanner.findings import Finding
from scanner.models import Zone
from scanner.services.results import run_import
from scanner.services.scope import scope_load

MAX_FILE_BYTES = 512 * 1024 * 1024


def parse_results(text: str) -> list[Finding]:
    """Sniff the format (nmap XML or masscan JSON) and parse it into findings."""
    from scanner.engines import masscan, nmap

    head = text.lstrip()[:200]
    if head.startswith("<?xml") or head.startswith("<nmaprun"):
        return [f for host in nmap.parse_xml(text) for f in host.findings]
    if head.startswith("[") or head.startswith("{"):
        return masscan.parse_json(text)
    raise ValueError("not an nmap XML (-oX) or masscan JSON (-oJ) file")


class Command(BaseCommand):
    help = "Import scan results from an nmap XML or masscan JSON file as a finished run."

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument(
            "--at", help="when the scan ran (ISO 8601, e.g. 2026-06-15T08:00:00+00:00); default now"
        )

    def handle(self, *args, file, at, **options):
        when = self._parse_at(at)
        path = Path(file)
        if not path.is_file():
            raise CommandError(f"{file}: no such file")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise CommandError(f"{file}: larger than {MAX_FILE_BYTES // 2**20} MiB")
        try:
            findings = parse_results(path.read_text(errors="replace"))
        except ValueError as exc:
            raise CommandError(f"{file}: {exc}") from None
        scope = scope_load()
        kept = [f for f in findings if scope.allows(ipaddress.ip_address(f.ip))]
        skipped = len(findings) - len(kept)
        if skipped:
            self.stderr.write(f"skipped {skipped} finding(s) outside the configured scope")
        if not kept:
            raise CommandError(f"{file}: no open port inside scope; nothing imported")
        zones = {
            zone
            for f in kept
            for net, zone in scope.networks
            if ipaddress.ip_address(f.ip) in net
            and net.version == ipaddress.ip_address(f.ip).version
        }
        run = run_import(
            findings=kept, at=when, zone=Zone.EXTERNAL if zones == {"external"} else Zone.INTERNAL
        )
        self.stdout.write(
            f"imported run {run.pk}: {run.ports_found} open port(s) "
            f"on {run.hosts_found} host(s) at {when.isoformat()}"
        )

    def _parse_at(self, at: str | None) -> datetime:
        if not at:
            return timezone.now()
        try:
            when = datetime.fromisoformat(at)
        except ValueError:
            raise CommandError(f"--at {at!r} is not an ISO 8601 time") from None
        if timezone.is_naive(when):
            when = timezone.make_aware(when)
        return when
