"""manage.py scan TARGETS...: a run through the same Celery path as scheduled scans.

Exit status: 0 the run finished healthy; 1 input refused; 2 finished degraded (results
printed, the reason on stderr); 3 failed or cancelled; 4 stopped waiting (--timeout).
"""

import argparse
import json
import math
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from django.core.management.base import BaseCommand, CommandError

from scanner.models import Engine, PortObservation, RunState, ScanRun, ScanShard, ShardState
from scanner.scope import ScopeError
from scanner.selectors import run_progress
from scanner.services.runs import MAX_RATE, MIN_RATE, ports_text_check, run_start
from scanner.targets import UDP_DEFAULT_PORTS, parse_ports

DONE_STATES = (RunState.FINISHED, RunState.FAILED, RunState.CANCELLED)
NO_WORKER_HINT_AFTER_S = 20
EXIT_REFUSED, EXIT_DEGRADED, EXIT_FAILED, EXIT_TIMEOUT = 1, 2, 3, 4
# The diff decides "far fewer ports than usual" just after the run finishes (same worker,
# usually well under a second; 4.6 s for 10,000 hosts on MariaDB): wait for its verdict.
DIFF_WAIT_S = 30


def seconds(text: str) -> float:
    """--timeout: a finite number of seconds >= 0 (nan would never time out, -1 at once)."""
    try:
        value = float(text) if text.isascii() else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= 0 (0: never)")
    return value


def rate(text: str) -> int:
    """--rate: whole packets per second within what run_start accepts."""
    if not re.fullmatch(r"[1-9][0-9]{0,15}", text) or not MIN_RATE <= int(text) <= MAX_RATE:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number of packets/s between {MIN_RATE} and {MAX_RATE}"
        )
    return int(text)


@contextmanager
def tasks_in_this_process(local: bool) -> Iterator[None]:
    """--local: the tasks the scan queues run in this process while the command runs.

    Celery's app is process-wide, so the eager setting is put back when the command ends
    however it ends: a caller in the same process (call_command, a test) keeps its workers.
    """
    if not local:
        yield
        return
    from portmon.celery import app

    saved = app.conf.task_always_eager, app.conf.task_eager_propagates
    app.conf.task_always_eager = app.conf.task_eager_propagates = True
    try:
        yield
    finally:
        app.conf.task_always_eager, app.conf.task_eager_propagates = saved


def one_line(text: str, limit: int = 500) -> str:
    # run.error can hold an engine's stderr: the exit message stays one line.
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Command(BaseCommand):
    help = "Scan targets (IPs, CIDRs, ranges, host names inside scope) and print what is open."

    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        django_error = parser.error

        def error(message: str) -> None:
            # argparse prints the usage and exits 2, which this command uses for a degraded
            # run: a refused option is exit 1 with one line, like any other refused input.
            if parser.called_from_command_line:
                parser.exit(EXIT_REFUSED, f"CommandError: {message} (see --help)\n")
            django_error(message)

        parser.error = error  # type: ignore[method-assign]  # argparse has no hook for it
        return parser

    def add_arguments(self, parser):
        parser.add_argument("targets", nargs="+")
        parser.add_argument("--ports", default="1-65535", help="TCP ports ('' for none)")
        parser.add_argument(
            "--udp-ports",
            default="",
            help="UDP ports to probe ('default': the curated list of UDP services; '': none)",
        )
        parser.add_argument("--rate", type=rate, default=100_000, help="masscan packets/s")
        parser.add_argument("--engine", default=Engine.AUTO, choices=Engine.values)
        parser.add_argument("--no-fingerprint", action="store_true", help="skip nmap -sV")
        parser.add_argument("--json", action="store_true", help="print results as JSON")
        parser.add_argument(
            "--local",
            action="store_true",
            help="run the tasks in this process instead of on the workers",
        )
        parser.add_argument(
            "--timeout", type=seconds, default=0, help="give up waiting after N seconds (0: never)"
        )

    def handle(self, *args, **opts):
        if opts["udp_ports"].strip().lower() == "default":
            opts["udp_ports"] = UDP_DEFAULT_PORTS
        try:
            if opts["ports"].strip() or not opts["udp_ports"].strip():
                ports_text_check(parse_ports(opts["ports"]))
            if opts["udp_ports"].strip():
                ports_text_check(parse_ports(opts["udp_ports"]))
        except ScopeError as exc:
            raise CommandError(str(exc)) from None
        with tasks_in_this_process(opts["local"]):
            self._scan(opts)

    def _scan(self, opts: dict) -> None:
        try:
            run = run_start(
                targets=opts["targets"],
                ports=opts["ports"],
                udp_ports=opts["udp_ports"],
                rate=opts["rate"],
                engine=opts["engine"],
                fingerprint=not opts["no_fingerprint"],
            )
        except ScopeError as exc:
            raise CommandError(str(exc)) from None
        self._wait(run.pk, opts["timeout"])
        run.refresh_from_db()
        if run.state != RunState.FINISHED:
            raise CommandError(
                f"run {run.pk} ended {run.state}: {one_line(run.error or 'no reason recorded')}",
                returncode=EXIT_FAILED,
            )
        run = self._diffed(run)
        self._print(run, as_json=opts["json"])
        reason = self._degraded_reason(run)
        if reason:
            raise CommandError(
                f"run {run.pk} finished degraded: {reason}; its results are partial",
                returncode=EXIT_DEGRADED,
            )

    def _diffed(self, run: ScanRun) -> ScanRun:
        deadline = time.monotonic() + DIFF_WAIT_S
        while run.diffed_at is None and time.monotonic() < deadline:
            time.sleep(0.2)
            run.refresh_from_db()
        if run.diffed_at is None:
            sys.stderr.write(
                f"run {run.pk}: not diffed after {DIFF_WAIT_S}s; "
                "only failed shards count as degraded here\n"
            )
        return run

    def _degraded_reason(self, run: ScanRun) -> str:
        shards = ScanShard.objects.filter(run=run)
        failed = shards.filter(state=ShardState.FAILED).count()
        if failed:
            detail = f": {one_line(run.error)}" if run.error else ""
            return f"{failed} of {shards.count()} shard(s) failed{detail}"
        if run.degraded:
            return one_line(
                run.error or "it found far fewer hosts or ports than recent healthy runs"
            )
        return ""

    def _wait(self, run_id: int, timeout: float) -> None:
        started = time.monotonic()
        hinted = False
        last = ""
        counted, counted_at = None, started
        while True:
            p = run_progress(run_id=run_id)
            line = (
                f"run {run_id}: {p['state']} {p['percent']:5.1f}% swept, "
                f"{p['shards_done']}/{p['shards']} shards, {p['ports_found']} open port(s)"
            )
            # nmap starts on ports found while the sweep still runs (FindingStream).
            if p["state"] == RunState.FINGERPRINTING or p["fingerprinted"]:
                line += (
                    f", {p['fingerprinted']}/{p['ports_found']} fingerprinted ({p['named']} named)"
                )
                if (p["fingerprinted"], p["named"]) != counted:
                    counted, counted_at = (p["fingerprinted"], p["named"]), time.monotonic()
                if p["in_nmap"]:
                    # nmap waits on slow ports: say so every 10 s, not one frozen line.
                    quiet = 10 * int((time.monotonic() - counted_at) // 10)
                    line += f", {p['in_nmap']} in nmap"
                    line += f", none done for {quiet}s" if quiet else ""
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
                raise CommandError(
                    f"run {run_id} not finished after {timeout:g}s; still going",
                    returncode=EXIT_TIMEOUT,
                )
            time.sleep(0.5)

    def _print(self, run: ScanRun, *, as_json: bool) -> None:
        rows: list[dict[str, str | int]] = [
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
            .order_by("host__ip", "proto", "port")
        ]
        if as_json:
            self.stdout.write(json.dumps(rows, indent=2))
            return
        for r in rows:
            label = " ".join(str(x) for x in (r["service"], r["product"], r["version"]) if x)
            self.stdout.write(f"{r['ip']:<40} {r['port']:>5}/{r['proto']}  {label}")
        self.stdout.write(f"{len(rows)} open port(s) on {run.hosts_found} host(s)")
