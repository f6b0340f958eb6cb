"""manage.py digest [--dry-run] [--to EMAIL]: build and send the daily digest.

Its daily schedule is one of the fixed jobs installed by `manage.py migrate`
(settings.PORTMON_FIXED_SCHEDULES).
"""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_email
from django.utils import timezone

from alerts.notify import selectors
from alerts.notify.models import Channel
from alerts.notify.services.delivery import messages_send_due
from alerts.notify.services.digest import digest_prepare, digest_queue, digest_render


class Command(BaseCommand):
    help = "Build today's digest and send it (--dry-run: print it, send and record nothing)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--dry-run", action="store_true", help="print the digest text; send nothing"
        )
        parser.add_argument(
            "--to",
            metavar="EMAIL",
            help="with --dry-run: the digest this address would get (default: global recipients)",
        )

    def handle(self, *args, dry_run: bool, to: str | None, **options):
        if to and not dry_run:
            raise CommandError("--to only works with --dry-run")
        if dry_run:
            self._print(to)
            return
        created = digest_queue()
        report = messages_send_due()
        self.stdout.write(
            f"digest: {len(created)} messages queued; sent {report.sent}, "
            f"retrying {report.retrying}, failed {report.failed}"
        )

    def _print(self, to: str | None) -> None:
        recipients = selectors.digest_recipients()
        if to:
            to = to.strip().lower()
            try:
                validate_email(to)
            except ValidationError:
                raise CommandError(f"not an email address: {to!r}") from None
            # Someone who is neither global nor an owner would get nothing; show them empty.
            targets = {to: recipients.get(to, frozenset())}
        else:
            targets = {a: None for a in selectors.global_recipients()}
            if not targets:
                self.stderr.write("PORTMON_DIGEST_RECIPIENTS is empty; showing everything")
                targets = {"(everything)": None}
        now = timezone.now()
        for i, (address, network_ids) in enumerate(targets.items()):
            digest = digest_prepare(
                recipient=address, network_ids=network_ids, channel=Channel.EMAIL, now=now
            )
            subject, text, _html = digest_render(digest=digest)
            if i:
                self.stdout.write("")
            self.stdout.write(f"To: {address}\nSubject: {subject}\n\n{text}", ending="")
