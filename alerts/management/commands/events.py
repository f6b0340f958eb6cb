"""manage.py events [--state new] [--kind high_risk] [--json]: list alert events."""

import json
import textwrap
from collections.abc import Iterator

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q, QuerySet

from alerts.models import AlertEvent, EventKind, EventState
from alerts.selectors import events_list

# Events read per query with --json. Pages are keyset queries, not iterator(): MariaDB's
# client library holds a whole result set in memory, chunked or not.
EVENTS_PAGE = 2000


class Command(BaseCommand):
    help = "List alert events, newest first (a table, or a JSON array with --json)."

    def add_arguments(self, parser):
        parser.add_argument("--state", action="append", choices=EventState.values)
        parser.add_argument("--kind", action="append", choices=EventKind.values)
        parser.add_argument(
            "--no-suppressed", action="store_true", help="leave out allow-rule suppressed ones"
        )
        parser.add_argument(
            "--limit", type=int, default=200, help="newest N events; 0: all (default 200)"
        )
        parser.add_argument("--json", action="store_true", help="print a JSON array")

    def handle(self, *args, **options):
        if options["limit"] < 0:
            raise CommandError(f"--limit {options['limit']}: must be 0 (all) or more")
        events = events_pages(
            events_list(
                states=options["state"],
                kinds=options["kind"],
                include_suppressed=not options["no_suppressed"],
            ),
            limit=options["limit"] or None,
        )
        if options["json"]:
            self._write_json(event_row(e) for e in events)
            return
        rows = [event_row(e) for e in events]
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

    def _write_json(self, rows: Iterator[dict]) -> None:
        # Written row by row: the same text as json.dumps(list, indent=2), without the list.
        separator = "[\n"
        for row in rows:
            self.stdout.write(
                separator + textwrap.indent(json.dumps(row, indent=2), "  "), ending=""
            )
            separator = ",\n"
        self.stdout.write("[]" if separator == "[\n" else "\n]")


def event_row(e: AlertEvent) -> dict:
    return {
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


def events_pages(events: QuerySet[AlertEvent], *, limit: int | None) -> Iterator[AlertEvent]:
    """Newest first, EVENTS_PAGE at a time: memory stays flat however many events match."""
    events = events.order_by("-created_at", "-id")
    after: AlertEvent | None = None
    while limit is None or limit > 0:
        page_events = events
        if after is not None:
            # Keyset: strictly older than the last row sent (ties on created_at by id).
            page_events = events.filter(created_at__lte=after.created_at).filter(
                Q(created_at__lt=after.created_at) | Q(id__lt=after.pk)
            )
        size = EVENTS_PAGE if limit is None else min(EVENTS_PAGE, limit)
        page = list(page_events[:size])
        yield from page
        if len(page) < size:
            return
        after = page[-1]
        if limit is not None:
            limit -= len(page)
