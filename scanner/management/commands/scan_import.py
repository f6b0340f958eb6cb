"""manage.py scan_import FILE [--at TIME] [--allow-truncated]: record a results file as a run."""

import itertools
import stat
from datetime import datetime
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from scanner.imports import ImportFileError, ImportReport, findings_in_scope, findings_read
from scanner.services.results import run_import
from scanner.services.scope import scope_load

MAX_FILE_BYTES = 512 * 1024 * 1024


class Command(BaseCommand):
    help = "Import scan results from an nmap XML or masscan JSON file as a finished run."

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument(
            "--at", help="when the scan ran (ISO 8601, e.g. 2026-06-15T08:00:00+00:00); default now"
        )
        parser.add_argument(
            "--allow-truncated",
            action="store_true",
            help="import a file cut short (no </nmaprun> or closing ]) as a degraded run",
        )

    def handle(self, *args, file, at, allow_truncated, **options):
        when = self._parse_at(at)
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
                    stream, when=when, report=report, allow_truncated=allow_truncated
                )
        except ImportFileError as exc:
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

    def _import(self, stream, *, when: datetime, report: ImportReport, allow_truncated: bool):
        findings = findings_in_scope(
            findings_read(stream, report=report, allow_truncated=allow_truncated),
            scope=scope_load(),
            report=report,
        )
        # Read up to the first finding in scope before writing anything: a file with none
        # (or broken before one) leaves no run behind. A later error rolls the run back.
        first = next(findings, None)
        if first is None:
            return None
        return run_import(findings=itertools.chain([first], findings), at=when, report=report)

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
