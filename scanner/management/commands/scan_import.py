"""manage.py scan_import FILE [--at TIME] [--targets CIDRS] [--ports SPEC] [--allow-truncated]
[--wait [--wait-timeout S]] [--poc]: record a results file as a run that covers what the scan
was asked to scan, at the time the file says it ran; its diff is queued for a worker."""

import itertools
import stat
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
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
from scanner.models import ScanRun
from scanner.services.results import run_import
from scanner.services.scope import scope_load
from scanner.targets import TargetError, parse_ports

MAX_FILE_BYTES = 512 * 1024 * 1024


class Command(BaseCommand):
    help = "Import scan results from an nmap XML or masscan JSON file as a finished run."

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument(
            "--at",
            help="when the scan ran (ISO 8601, e.g. 2026-06-15T08:00:00+00:00); default: the "
            "file's own time (nmap's start, masscan's timestamps), else now",
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
        parser.add_argument(
            "--wait",
            action="store_true",
            help="wait for a worker to diff the run and print the events it raised",
        )
        parser.add_argument(
            "--wait-timeout",
            type=float,
            default=600.0,
            help="seconds --wait waits for the diff (default 600)",
        )
        parser.add_argument(
            "--poc",
            action="store_true",
            help="let PoC checks probe the ports this import reports (an import is offline: "
            "without it, nothing is sent to the addresses in the file)",
        )

    def handle(
        self, *args, file, at, targets, ports, allow_truncated, wait, wait_timeout, poc, **options
    ):
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
                    poc=poc,
                    name=path.name,
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
        source = "" if when is not None else " (the file's time)" if report.started else " (now)"
        self.stdout.write(
            f"imported run {run.pk}: {run.ports_found} open port(s) "
            f"on {run.hosts_found} host(s) at {run.finished_at.isoformat()}{source}{degraded}"
        )
        age = timezone.now() - run.finished_at
        old = age > timedelta(hours=settings.PORTMON_IMMEDIATE_MAX_AGE_HOURS)
        self.stdout.write(
            f"diff of run {run.pk} queued: a worker on the default queue diffs it"
            + (" (events go to the digest only: the scan is older than "
               f"{settings.PORTMON_IMMEDIATE_MAX_AGE_HOURS} h)" if old else "")
            + ("" if poc else "; no PoC check probes these ports (--poc to allow)")
        )  # fmt: skip
        if wait:
            self._wait(run.pk, wait_timeout)

    def _wait(self, run_id: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ScanRun.objects.filter(pk=run_id, diffed_at__isnull=False).exists():
            if time.monotonic() > deadline:
                raise CommandError(
                    f"run {run_id}: not diffed after {timeout:g} s; is a worker running on "
                    "the default queue? (bin/run starts one; the diff stays queued)"
                )
            time.sleep(0.5)
        run = ScanRun.objects.get(pk=run_id)
        # The run's events through their reverse relation: scanner does not import alerts.
        kinds = Counter(run.events.values_list("kind", flat=True))
        raised = ", ".join(f"{kinds[k]} {k}" for k in sorted(kinds)) or "no events"
        notes = [f"degraded: {run.error or 'far fewer ports than usual'}"] if run.degraded else []
        notes += [
            f"baseline: {b['ports']} ports on {b['hosts']} hosts recorded for {b['network']}"
            for b in run.baseline
        ]
        self.stdout.write(f"diff of run {run_id}: {raised}" + "".join(f"; {n}" for n in notes))

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
        when: datetime | None,
        report: ImportReport,
        allow_truncated: bool,
        targets: str,
        ports: str,
        poc: bool,
        name: str = "",
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
        # Read up to here, the file said when it ran (nmap's start comes first; masscan's
        # earliest timestamp so far).
        options: dict[str, Any] = {
            "at": when or report.started or timezone.now(),
            "report": report,
            "coverage": coverage,
            "probes_allowed": poc,
            "at_from_file": when is None,
            "source_name": name,
        }
        if first is None:
            if not coverage()[0]:
                return None
            return run_import(findings=[], **options)
        return run_import(findings=itertools.chain([first], findings), **options)

    def _parse_at(self, at: str | None) -> datetime | None:
        if not at:
            return None
        try:
            when = datetime.fromisoformat(at)
        except ValueError:
            raise CommandError(f"--at {at!r} is not an ISO 8601 time") from None
        if timezone.is_naive(when):
            when = timezone.make_aware(when)
        return when
