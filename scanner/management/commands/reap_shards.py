"""manage.py reap_shards [--schedule]: retry shards and fingerprints whose worker vanished."""

import json

from django.core.management.base import BaseCommand
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from scanner.services.fingerprints import fingerprints_reap
from scanner.services.runs import runs_stalled_end
from scanner.services.shards import shards_reap

TASK_NAME = "scanner: reap lost shards"


class Command(BaseCommand):
    help = (
        "Requeue shards and fingerprint tasks lost past their hard time limit "
        "(beat runs it every minute)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--schedule", action="store_true", help="install the every-minute beat schedule"
        )

    def handle(self, *args, schedule, **options):
        if schedule:
            every, _ = IntervalSchedule.objects.get_or_create(
                every=1, period=IntervalSchedule.MINUTES
            )
            PeriodicTask.objects.update_or_create(
                name=TASK_NAME,
                defaults={"task": "scanner.reap_shards", "interval": every, "crontab": None,
                          "kwargs": json.dumps({}), "queue": "default", "enabled": True},
            )  # fmt: skip
            self.stdout.write(f"scheduled '{TASK_NAME}' every minute")
            return
        shards = shards_reap()
        ports = fingerprints_reap()
        ended = runs_stalled_end()
        self.stdout.write(
            f"reaped {shards} shard(s) and {ports} port(s) waiting for nmap; "
            f"{len(ended)} stalled run(s) ended"
        )
