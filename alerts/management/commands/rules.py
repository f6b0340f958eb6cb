"""manage.py rules export [FILE] | rules import FILE [--dry-run]: move a rule set between
installations as JSON (alerts/rule_files.py has the format)."""

import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from alerts.rule_files import (
    MAX_BYTES,
    UNCHANGED,
    RuleFileError,
    rules_document_dump,
    rules_document_parse,
)
from alerts.selectors import rule_entries_load, rules_import_preview
from alerts.services.rules import rules_import


class Command(BaseCommand):
    help = "Export the rules as JSON, or import a rules file (dry run first with --dry-run)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        export = sub.add_parser("export", help="write every rule as JSON (stdout without FILE)")
        export.add_argument("file", nargs="?")
        imp = sub.add_parser("import", help="create or update rules from a JSON file")
        imp.add_argument("file", help="a file written by 'rules export' ('-': stdin)")
        imp.add_argument(
            "--dry-run", action="store_true", help="show what would change; write nothing"
        )

    def handle(self, *args, **options):
        if options["action"] == "export":
            self._export(options["file"])
        else:
            self._import(options["file"], dry_run=options["dry_run"])

    def _export(self, path: str | None) -> None:
        entries = [entry for _, entry in rule_entries_load()]
        text = rules_document_dump(entries, exported_at=timezone.now())
        if path is None or path == "-":
            self.stdout.write(text, ending="")
            return
        try:
            Path(path).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"{path}: {exc.strerror}") from None
        self.stderr.write(f"{len(entries)} rule(s) written to {path}")

    def _import(self, path: str, *, dry_run: bool) -> None:
        raw = _read(path)
        try:
            entries = rules_document_parse(raw)
        except RuleFileError as exc:
            raise CommandError(f"{path}: {exc}") from None
        preview = rules_import_preview(entries)
        for item, matches in preview:
            e = item.entry
            ports = "any" if e.port_lo is None else f"{e.port_lo}-{e.port_hi or e.port_lo}"
            where = f"{e.ip_cidr or 'any'} port {ports}/{e.proto}"
            if e.zone:
                where += f" zone {e.zone}"
            if e.process:
                where += f" process {e.process}"
            target = f" #{item.rule_id}" if item.rule_id else ""
            fields = f" ({', '.join(item.changed_fields)})" if item.changed_fields else ""
            self.stdout.write(
                f"{item.change:<9} {e.action} {where}{target}{fields}: "
                f"{matches} event(s) of the last 7 days"
            )
        counts = _counts(item for item, _ in preview)
        if dry_run:
            self.stdout.write(f"dry run, nothing written: {counts}")
            return
        done = rules_import(entries=entries)
        self.stdout.write(f"imported: {_counts(done)}")


def _read(path: str) -> bytes:
    try:
        if path == "-":
            raw = sys.stdin.buffer.read(MAX_BYTES + 1)
        else:
            with open(path, "rb") as f:
                raw = f.read(MAX_BYTES + 1)  # past the limit is enough to refuse it
    except OSError as exc:
        raise CommandError(f"{path}: {exc.strerror}") from None
    return raw


def _counts(items) -> str:
    changes = [item.change for item in items]
    return ", ".join(
        f"{changes.count(c)} {'unchanged' if c == UNCHANGED else c + 'd'}"
        for c in ("create", "update", UNCHANGED)
    )
