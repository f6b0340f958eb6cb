"""manage.py events [--state new] [--kind high_risk] [--json]: list alert events."""

import json

from django.core.management.base import BaseCommand

from alerts.models import EventKind, EventState
from alerts.selectors import events_list


class Command(BaseCommand):
    help = "List alert events, newest first (a table, or a JSON array with --json)."

    def add_arguments(self, parser):
        parser.add_argument("--state", action="append", choices=EventState.values)
        parser.add_argument("--kind", action="append", choices=EventKind.values)
        parser.add_argument(
            "--no-suppressed", action="store_true", help="leave out allow-rule suppressed ones"
        )
        parser.add_argument("--limit", type=int, default=200)
        parser.add_argument("--json", action="store_true", help="print a JSON array")

    def handle(self, *args, **options):
        events = events_list(
            states=options["state"],
            kinds=options["kind"],
            include_suppressed=not options["no_suppressed"],
        )[: max(options["limit"], 0)]
        rows = [
            {
                "id": e.pk,
                "created_at": e.created_at.isoformat(),
                "kind": e.kind,
                "state": e.state,
                "ip": e.host.ip,
                "proto": e.proto,
                "port": e.port,
                "immediate": e.immediate,
                "suppressed": e.suppressed,
                "rule_id": e.rule_id,
                "run_id": e.run_id,
                "url": e.get_absolute_url(),
                "detail": e.detail,
            }
            for e in events
        ]
        if options["json"]:
            self.stdout.write(json.dumps(rows, indent=2))
            return
        if not rows:
            self.stdout.write("no events")
            return
        header = ("ID", "CREATED", "KIND", "STATE", "ENDPOINT", "FLAGS", "RULE")
        table = [header]
        for r in rows:
            flags = ",".join(
                f for f, on in (("now", r["immediate"]), ("suppressed", r["suppressed"])) if on
            )
            table.append(
                (
                    str(r["id"]),
                    r["created_at"][:16].replace("T", " "),
                    r["kind"],
                    r["state"],
                    f"{r['ip']}:{r['port']}/{r['proto']}",
                    flags or "-",
                    str(r["rule_id"] or "-"),
                )
            )
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        for row in table:
            self.stdout.write(
                "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            )
