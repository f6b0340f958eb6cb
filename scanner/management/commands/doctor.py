"""manage.py doctor [--json] [--warn-only] [--skip NAME,...]: is this node ready to run Portmon?"""

import json

from django.core.management.base import BaseCommand, CommandError

from scanner.doctor import CHECKS, FAIL, OK, run_checks


class Command(BaseCommand):
    help = (
        "Check the database, broker, workers per queue, beat, masscan/nmap and capabilities, "
        "routes to the networks in scope, SMTP, clock and disk; exit 1 on any FAIL."
    )

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print the checks as JSON")
        parser.add_argument(
            "--warn-only",
            action="store_true",
            help="report failures but exit 0 (bin/run uses it at start)",
        )
        parser.add_argument(
            "--skip",
            default="",
            metavar="NAME,...",
            help=f"checks to leave out, from: {', '.join(CHECKS)}",
        )

    def handle(self, *args, json: bool, warn_only: bool, skip: str, **options):
        skipped = [name.strip() for name in skip.split(",") if name.strip()]
        unknown = sorted(set(skipped) - set(CHECKS))
        if unknown:
            raise CommandError(f"unknown check {unknown[0]!r}; choose from {', '.join(CHECKS)}")
        checks = run_checks(skip=skipped)
        if json:
            self.stdout.write(_dumps([c.as_dict() for c in checks]))
        else:
            width = max((len(c.name) for c in checks), default=0)
            for check in checks:
                style = {OK: self.style.SUCCESS, FAIL: self.style.ERROR}.get(
                    check.status, self.style.WARNING
                )
                self.stdout.write(f"{style(check.status.ljust(4))} {check.name.ljust(width)}  "
                                  f"{check.detail}")  # fmt: skip
                if check.hint:
                    self.stdout.write(f"     {''.ljust(width)}  fix: {check.hint}")
        failed = [c.name for c in checks if c.status == FAIL]
        if failed and not warn_only:
            raise CommandError(f"{len(failed)} check(s) failed: {', '.join(failed)}")


def _dumps(data) -> str:
    # The option is called --json, which shadows the module inside handle().
    return json.dumps(data, indent=2)
