"""manage.py scan_import FILE [--at TIME] [--targets CIDRS] [--ports SPEC] [--allow-truncated]:
record a results file as a run that covers what the scan was asked to scan."""

import itertools
import stat
from datetime import datetime
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from scanner.imports import (
    MASSCAN_TARGETS_REQUIRED,
    CoverageError,
    ImportFileError,
    ImportReport,
    coverage_targets_parse,
    findings_in_scope,
    findings_read,
    import_coverage,
)
from scanner.services.results import run_import
from scanner.services.scope import scope_load
from scanner.targets import TargetError, parse_ports

MAX_FILE_BYTES = 512 * 1024 * 1024


class Command(BaseCommand):
    help = "Import scan results from an nmap XML or masscan JSON file as a finished run."

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument(
            "--at", help="when the scan ran (ISO 8601, e.g. 2026-06-15T08:00:00+00:00); default now"
        )
        parser.add_argument(
            "--targets",
            default="",
            help="what the scan covered: IPs, CIDRs, A-B ranges (required for masscan JSON; "
            "overrides the targets of an nmap file's command line)",
        )
        parser.add_argument(
            "--ports",
            default="",
            help="ports the scan covered, e.g. 1-65535 (default: nmap's <scaninfo>, "
            "else the ports reported open)",
        )
        parser.add_argument(
            "--allow-truncated",
            action="store_true",
            help="import a file cut short (no </nmaprun> or closing ]) as a degraded run",
        )

    def handle(self, *args, file, at, targets, ports, allow_truncated, **options):
        when = self._parse_at(at)
        self._check_coverage_options(targets, ports)
        path = Path(file)
        try:
            info = path.stat()
        except FileNotFoundError:
            raise CommandError(f"{file}: no such file") from None
        except OSError as exc:
            raise CommandError(f"{file}: cannot read ({exc.strerror})") from None
        # Checked before opening: opening a FIFO would wait for a writer forever.
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise CommandError(f"{file}: {kind}")
        if info.st_size > MAX_FILE_BYTES:
            raise CommandError(f"{file}: larger than {MAX_FILE_BYTES // 2**20} MiB")
        report = ImportReport()
        try:
            with path.open("rb") as stream:
                run = self._import(
                    stream,
                    when=when,
                    report=report,
                    allow_truncated=allow_truncated,
                    targets=targets,
                    ports=ports,
                )
        except (ImportFileError, CoverageError, TargetError) as exc:
            raise CommandError(f"{file}: {exc}") from None
        except OSError as exc:
            raise CommandError(f"{file}: cannot read ({exc.strerror})") from None
        if report.outside_scope:
            self.stderr.write(
                f"skipped {report.outside_scope} finding(s) outside the configured scope"
            )
        if report.untracked:
            self.stderr.write(f"skipped {report.untracked} open port(s) of untracked protocols")
        if run is None:
            raise CommandError(f"{file}: no open port inside scope; nothing imported")
        degraded = f" (degraded: {run.error})" if run.degraded else ""
        self.stdout.write(
            f"imported run {run.pk}: {run.ports_found} open port(s) "
            f"on {run.hosts_found} host(s) at {when.isoformat()}{degraded}"
        )

    def _check_coverage_options(self, targets: str, ports: str) -> None:
        for option, value, parse in (
            ("--targets", targets, lambda: coverage_targets_parse(targets)),
            ("--ports", ports, lambda: parse_ports(ports)),
        ):
            try:
                if value:
                    parse()
            except (TargetError, CoverageError) as exc:
                raise CommandError(f"{option}: {exc}") from None

    def _import(
        self,
        stream,
        *,
        when: datetime,
        report: ImportReport,
        allow_truncated: bool,
        targets: str,
        ports: str,
    ):
        scope = scope_load()
        read = findings_read(stream, report=report, allow_truncated=allow_truncated)
        if report.format == "masscan" and not targets:
            # Refused before reading on: guessing the targets from the hosts present is
            # what let vanished hosts' ports stay open forever.
            raise CoverageError(MASSCAN_TARGETS_REQUIRED)
        findings = findings_in_scope(read, scope=scope, report=report)

        def coverage() -> tuple[str, str]:
            return import_coverage(report, scope=scope, targets=targets, ports=ports)

        # Read up to the first finding in scope before writing anything: a file with none
        # (or broken before one) leaves no run behind, unless it covered hosts in scope
        # (all of them down or closed: that is news about them). A later error rolls the
        # run back.
        first = next(findings, None)
        if first is None:
            if not coverage()[0]:
                return None
            return run_import(findings=[], at=when, report=report, coverage=coverage)
        return run_import(
            findings=itertools.chain([first], findings),
            at=when,
            report=report,
            coverage=coverage,
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
