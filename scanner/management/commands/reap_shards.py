"""manage.py reap_shards: hand on work whose worker vanished, end stalled runs (what beat
does every minute: settings.PORTMON_FIXED_SCHEDULES)."""

from django.core.management.base import BaseCommand

from scanner.services.fingerprints import fingerprints_reap
from scanner.services.runs import runs_stalled_end
from scanner.services.shards import shards_reap


class Command(BaseCommand):
    help = (
        "Hand on shards and fingerprint ports whose worker died or whose message was lost, "
        "and end stalled runs (beat runs it every minute)."
    )

    def handle(self, *args, **options):
        shards = shards_reap()
        ports = fingerprints_reap()
        ended = runs_stalled_end()
        self.stdout.write(
            f"reaped {shards} shard(s) and {ports} port(s) waiting for nmap; "
            f"{len(ended)} stalled run(s) ended"
        )
