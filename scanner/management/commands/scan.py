"""manage.py scan TARGETS...: a run through the same Celery path as scheduled scans."""

import json
import sys
import time

from django.core.management.base import BaseCommand, CommandError

from scanner.models import Engine, PortObservation, RunState, ScanRun
from scanner.scope import ScopeError
from scanner.services.runs import run_progress, run_start

DONE_STATES = (RunState.FINISHED, RunState.FAILED, RunState.CANCELLED)
NO_WORKER_HINT_AFTER_S = 20


class Command(BaseCommand):
    help = "Scan targets (IPs, CIDRs, host names inside scope) and print what is open."

    def add_arguments(self, parser):
        parser.add_argument("targets", nargs="+")
        parser.add_argument("--ports", default="1-65535")
        parser.add_argument("--rate", type=int, default=100_000, help="masscan packets/s")
        parser.add_argument("--engine", default=Engine.AUTO, choices=Engine.values)
        parser.add_argument("--no-fingerprint", action="store_true", help="skip nmap -sV")
        parser.add_argument("--json", action="store_true", help="print results as JSON")
        parser.add_argument(
            "--local",
            action="store_true",
            help="run the tasks in this process instead of on the workers",
        )
        parser.add_argument(
            "--timeout", type=float, default=0, help="give up waiting after N seconds (0: never)"
        )

    def handle(self, *args, **opts):
        if opts["local"]:
            from portmon.celery import app

            app.conf.task_always_eager = True
            app.conf.task_eager_propagates = True
        try:
            run = run_start(
                targets=opts["targets"],
                ports=opts["ports"],
                rate=opts["rate"],
                engine=opts["engine"],
                fingerprint=not opts["no_fingerprint"],
            )
        except ScopeError as exc:
            raise CommandError(str(exc)) from None
        self._wait(run.pk, opts["timeout"])
        run.refresh_from_db()
        if run.state != RunState.FINISHED:
            raise CommandError(f"run {run.pk} ended {run.state}: {run.error}")
        self._print(run, as_json=opts["json"])

    def _wait(self, run_id: int, timeout: float) -> None:
        started = time.monotonic()
        hinted = False
        last = ""
        while True:
            p = run_progress(run_id=run_id)
            line = (
                f"run {run_id}: {p['state']} {p['percent']:5.1f}% swept, "
                f"{p['shards_done']}/{p['shards']} shards, {p['ports_found']} open port(s)"
            )
            if p["state"] == RunState.FINGERPRINTING:
                line += f", {p['fingerprinted']}/{p['ports_found']} fingerprinted"
            if line != last:
                sys.stderr.write(line + "\n")
                last = line
            if p["state"] in DONE_STATES:
                return
            elapsed = time.monotonic() - started
            if not hinted and elapsed > NO_WORKER_HINT_AFTER_S and p["percent"] == 0:
                sys.stderr.write(
                    "no progress yet: is a worker running? (bin/run starts one; or use --local)\n"
                )
                hinted = True
            if timeout and elapsed > timeout:
                raise CommandError(f"run {run_id} not finished after {timeout:.0f}s; still going")
            time.sleep(0.5)

    def _print(self, run: ScanRun, *, as_json: bool) -> None:
        rows = [
            {
                "ip": o.host.ip,
                "port": o.port,
                "proto": o.proto,
                "service": o.service,
                "product": o.product,
                "version": o.version,
            }
            for o in PortObservation.objects.filter(run=run)
            .select_related("host")
            .order_by("host__ip", "port")
        ]
        if as_json:
            self.stdout.write(json.dumps(rows, indent=2))
            return
        for r in rows:
            label = " ".join(x for x in (r["service"], r["product"], r["version"]) if x)
            self.stdout.write(f"{r['ip']:<40} {r['port']:>5}/{r['proto']}  {label}")
        self.stdout.write(f"{len(rows)} open port(s) on {run.hosts_found} host(s)")
