"""Deployment checks behind `manage.py doctor`: each returns Check rows and writes nothing.

A check answers one question an operator has when a node misbehaves (is the broker
reachable from here, does anyone consume sweep.external, is beat alive, can this process
run masscan, where do packets for this network go) and says how to fix a failure.
"""

import ipaddress
import json
import os
import shlex
import shutil
import smtplib
import ssl
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from scanner.engines import EngineError, privileges
from scanner.engines.base import run_process

OK, WARN, FAIL = "OK", "WARN", "FAIL"
# django-celery-beat's DatabaseScheduler writes last_run_at back every 3 minutes
# (sync_every), and the reaper runs every minute: older than this, beat is not running.
BEAT_STALE_AFTER = timedelta(minutes=6)
CLOCK_MAX_SKEW = timedelta(seconds=60)
# A run's SQLite file, broker folders and masscan temp files live here; below 1 GiB a day's
# results may not fit, below 256 MiB SQLite and the filesystem broker start failing.
DISK_WARN_BYTES = 1 << 30
DISK_FAIL_BYTES = 256 << 20
# `ip route get` cannot print a blackhole, unreachable or prohibit route: the kernel refuses
# the lookup with one of these errors instead.
_ROUTE_ERRORS = {
    "Invalid argument": "a blackhole route",
    "No route to host": "an unreachable route",
    "Permission denied": "a prohibit route",
    "Network is unreachable": "no route at all",
}


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # OK, WARN or FAIL
    detail: str
    hint: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


# --- database ------------------------------------------------------------------------------
def check_database() -> list[Check]:
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    try:
        connection.ensure_connection()
        executor = MigrationExecutor(connection)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except Exception as exc:  # any driver error: the point is to report it, not to crash
        return [
            Check(
                "database",
                FAIL,
                f"{connection.vendor} unreachable: {_one_line(exc)}",
                "check DATABASE_URL, that the server runs and that it accepts this node "
                "(firewall, user grants, TLS options)",
            )
        ]
    if plan:
        names = ", ".join(f"{m.app_label}.{m.name}" for m, _backwards in plan[:3])
        more = f" and {len(plan) - 3} more" if len(plan) > 3 else ""
        return [
            Check(
                "database",
                FAIL,
                f"{len(plan)} unapplied migration(s): {names}{more}",
                "run `python manage.py migrate` (once, from one node)",
            )
        ]
    return [Check("database", OK, f"{connection.vendor} reachable, all migrations applied")]


def database_ok(checks: Iterable[Check]) -> bool:
    return all(c.status == OK for c in checks if c.name == "database")


# --- broker and workers --------------------------------------------------------------------
def check_broker(*, timeout: float = 3.0) -> list[Check]:
    from portmon.celery import app

    try:
        with app.connection_for_write() as conn:
            uri = conn.as_uri()  # password masked
            conn.ensure_connection(
                max_retries=1, interval_start=0, interval_step=0, timeout=timeout
            )
    except Exception as exc:  # kombu wraps driver errors in OperationalError, not always
        return [
            Check(
                "broker",
                FAIL,
                f"unreachable: {_one_line(exc)}",
                "check CELERY_BROKER_URL, that Redis runs and that its port is open to this node",
            )
        ]
    return [Check("broker", OK, f"reachable ({uri})")]


def required_queues(zones: Iterable[str]) -> list[str]:
    """Queues that must have a consumer for a run to finish: one sweep queue per zone in use."""
    return [f"sweep.{zone}" for zone in sorted(set(zones))] + ["fingerprint", "default"]


def queue_consumers(active_queues: dict | None) -> dict[str, list[str]]:
    """{queue: [worker hostname]} from `celery inspect active_queues` replies."""
    consumers: dict[str, list[str]] = {}
    for worker, queues in sorted((active_queues or {}).items()):
        for queue in queues or []:
            consumers.setdefault(queue.get("name", ""), []).append(worker)
    return consumers


def check_consumers(*, zones: Iterable[str], timeout: float = 2.0) -> list[Check]:
    from portmon.celery import app

    try:
        replies = app.control.inspect(timeout=timeout).active_queues()
    except Exception as exc:
        return [Check("consumers", FAIL, f"cannot ask the workers: {_one_line(exc)}", "")]
    consumers = queue_consumers(replies)
    checks = []
    for queue in required_queues(zones):
        workers = consumers.get(queue)
        if workers:
            checks.append(Check(f"queue {queue}", OK, "consumed by " + ", ".join(workers)))
            continue
        if queue.startswith("sweep."):
            hint = (
                f"start a sweep worker for it on a node near those networks: "
                f"`systemctl enable --now portmon-sweep@{queue}`"
            )
        else:
            hint = "start a general worker: `systemctl enable --now portmon-worker`"
        checks.append(Check(f"queue {queue}", FAIL, "no worker consumes it", hint))
    return checks


def check_beat(*, now: datetime | None = None) -> list[Check]:
    """Beat is alive when some periodic task (the every-minute reaper) ran recently."""
    from django.db.models import Max
    from django_celery_beat.models import PeriodicTask

    now = now or datetime.now(UTC)
    tasks = PeriodicTask.objects.filter(enabled=True)
    if not tasks.exists():
        return [
            Check(
                "beat",
                WARN,
                "no periodic task is scheduled",
                "run `python manage.py migrate` (it installs the fixed schedules)",
            )
        ]
    newest = tasks.aggregate(newest=Max("last_run_at"))["newest"]
    hint = "run exactly one beat per installation: `systemctl enable --now portmon-beat`"
    if newest is None:
        return [Check("beat", FAIL, "no periodic task has ever run", hint)]
    age = now - newest
    if age > BEAT_STALE_AFTER:
        return [Check("beat", FAIL, f"last periodic task ran {_ago(age)} ago", hint)]
    return [Check("beat", OK, f"last periodic task ran {_ago(age)} ago")]


# --- tools on this node --------------------------------------------------------------------
def tool_version(name: str) -> str | None:
    """The first line `name --version` prints, or None if name is not on PATH."""
    path = shutil.which(name)
    if path is None:
        return None
    try:
        result = run_process([path, "--version"], timeout=10)
    except EngineError as exc:
        return f"{path}: --version failed ({exc})"
    lines = [line.strip() for line in (result.stdout + result.stderr).splitlines()]
    return next((line for line in lines if "version" in line.lower()), path)


def check_tools() -> list[Check]:
    checks = []
    nmap = tool_version("nmap")
    if nmap is None:
        checks.append(
            Check(
                "nmap",
                FAIL,
                "not found on PATH",
                "apt-get install nmap (fingerprints need it on every worker node)",
            )
        )
    else:
        checks.append(Check("nmap", OK, nmap))
    masscan = tool_version("masscan")
    if masscan is None:
        checks.append(
            Check(
                "masscan",
                WARN,
                "not found on PATH: engine=auto uses the connect scanner on this node",
                "apt-get install masscan on sweep nodes",
            )
        )
    elif not privileges.can_send_raw_packets():
        checks.append(
            Check(
                "masscan",
                WARN,
                f"{masscan}; this process lacks CAP_NET_RAW: engine=auto uses the connect "
                "scanner here and masscan shards fail",
                privileges.NEEDS_NET_RAW,
            )
        )
    else:
        checks.append(Check("masscan", OK, f"{masscan}; CAP_NET_RAW present"))
    return checks


# --- routes ----------------------------------------------------------------------------------
def probe_address(cidr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address whose route stands for the network: its first host."""
    network = ipaddress.ip_network(cidr, strict=False)
    if network.num_addresses <= 2:
        return network.network_address
    return network.network_address + 1


def route_verdict(returncode: int, stdout: str, stderr: str) -> tuple[str, str]:
    """(status, detail) from the output of `ip -j route get ADDRESS`."""
    if returncode != 0:
        error = stderr.strip().removeprefix("RTNETLINK answers:").strip() or f"exit {returncode}"
        kind = _ROUTE_ERRORS.get(error)
        return FAIL, f"{kind} ({error})" if kind else error
    try:
        route = (json.loads(stdout) or [{}])[0]
    except (ValueError, IndexError):
        return FAIL, f"unreadable `ip route get` output: {stdout[:80]!r}"
    parts = [f"dev {route.get('dev', '?')}"]
    if route.get("gateway"):
        parts.append(f"via {route['gateway']}")
    if route.get("prefsrc"):
        parts.append(f"src {route['prefsrc']}")
    if route.get("type", "unicast") != "unicast":
        parts.append(f"({route['type']})")
    return OK, " ".join(parts)


def check_routes(*, cidrs: Iterable[str]) -> list[Check]:
    cidrs = list(cidrs)
    if not cidrs:
        hint = "python manage.py scope add CIDR --zone internal|external"
        return [Check("routes", WARN, "no network in scope: nothing will be scanned", hint)]
    ip_tool = shutil.which("ip")
    checks = []
    for cidr in cidrs:
        address = probe_address(cidr)
        if ip_tool is None:
            hint = "apt-get install iproute2"
            checks.append(Check(f"route {cidr}", FAIL, "`ip` not found", hint))
            continue
        result = run_process([ip_tool, "-j", "route", "get", str(address)], timeout=10)
        status, detail = route_verdict(result.returncode, result.stdout, result.stderr)
        hint = (
            f"this node cannot send to {cidr}: fix its routing table, or run this zone's "
            "sweep worker on a node that reaches it"
        )
        if status == OK:
            hint = ""
        checks.append(Check(f"route {cidr}", status, f"{address}: {detail}", hint))
    return checks


# --- scope ------------------------------------------------------------------------------------
def check_scope(*, networks: Iterable[str], exclusions: Iterable[str]) -> list[Check]:
    """Stored scope rows that scans ignore: written by a path that skipped validation."""
    from scanner.scope import ScopeError, parse_cidr, stored_network

    networks, exclusions = list(networks), list(exclusions)
    checks = []
    for kind, cidr in [("network", c) for c in networks] + [("exclusion", c) for c in exclusions]:
        try:
            if kind == "network":
                parse_cidr(cidr)
            elif stored_network(cidr) is None:
                raise ScopeError(f"{cidr!r} is not a CIDR")
        except ScopeError as exc:
            checks.append(
                Check(
                    f"scope {kind} {cidr!r}",
                    FAIL,
                    f"ignored by every scan: {exc}",
                    f"python manage.py scope remove {shlex.quote(cidr)}",
                )
            )
    if checks:
        return checks
    detail = f"{len(networks)} network(s), {len(exclusions)} exclusion(s), all valid"
    return [Check("scope", OK, detail)]


# --- mail, clock, disk -------------------------------------------------------------------------
def check_smtp(
    *, host: str, port: int, use_ssl: bool = False, use_tls: bool = False, timeout: float = 5.0
) -> list[Check]:
    if not host:
        return [Check("smtp", OK, "EMAIL_HOST unset: mail goes to files or the console")]
    try:
        factory: Callable[..., smtplib.SMTP] = smtplib.SMTP_SSL if use_ssl else smtplib.SMTP
        with factory(host, port, timeout=timeout) as smtp:
            smtp.ehlo()
            if use_tls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            smtp.noop()
    except (OSError, smtplib.SMTPException) as exc:
        return [
            Check(
                "smtp",
                FAIL,
                f"{host}:{port} unreachable: {_one_line(exc)}",
                "check EMAIL_HOST/EMAIL_PORT and that the relay accepts this node",
            )
        ]
    return [Check("smtp", OK, f"{host}:{port} answers")]


def check_clock(*, now: datetime | None = None) -> list[Check]:
    """Local clock against the database server's: shard limits and the reaper compare them."""
    from django.db import connection

    if connection.vendor != "mysql":
        return [Check("clock", OK, f"{connection.vendor} runs on this node's clock")]
    with connection.cursor() as cursor:
        cursor.execute("SELECT UTC_TIMESTAMP(6)")
        server = cursor.fetchone()[0].replace(tzinfo=UTC)
    skew = (now or datetime.now(UTC)) - server
    detail = f"{abs(skew.total_seconds()):.1f} s from the database server"
    if abs(skew) > CLOCK_MAX_SKEW:
        return [Check("clock", FAIL, detail, "run NTP (chrony or systemd-timesyncd) everywhere")]
    return [Check("clock", OK, detail)]


def check_disk(*, path: Path) -> list[Check]:
    if not path.is_dir():
        return [Check("disk", FAIL, f"{path} does not exist", "create it (deploy/install.sh)")]
    if not os.access(path, os.W_OK | os.X_OK):
        return [
            Check(
                "disk",
                FAIL,
                f"{path} is not writable by uid {os.geteuid()}",
                f"chown -R portmon: {path}",
            )
        ]
    free = shutil.disk_usage(path).free
    detail = f"{free / (1 << 30):.1f} GiB free in {path}"
    hint = "free space or move PORTMON_DATA_DIR to a bigger disk"
    if free < DISK_FAIL_BYTES:
        return [Check("disk", FAIL, detail, hint)]
    if free < DISK_WARN_BYTES:
        return [Check("disk", WARN, detail, hint)]
    return [Check("disk", OK, detail)]


# --- all of them ---------------------------------------------------------------------------
CHECKS = (
    "database", "broker", "consumers", "beat", "tools", "scope", "routes", "smtp", "clock", "disk",
)  # fmt: skip
_NEEDS_DATABASE = {"consumers", "beat", "scope", "routes", "clock"}


def run_checks(*, skip: Iterable[str] = ()) -> list[Check]:
    """Every check except those in skip, in the order of CHECKS."""
    from django.conf import settings

    from scanner.models import Exclusion, Network
    from scanner.scope import stored_network

    skipped = set(skip)
    results: list[Check] = []
    for name in CHECKS:
        if name in skipped:
            continue
        if name in _NEEDS_DATABASE and not database_ok(results):
            results.append(Check(name, WARN, "not checked: the database is unreachable"))
            continue
        if name == "database":
            results += check_database()
        elif name == "broker":
            results += check_broker()
        elif name == "consumers":
            zones = Network.objects.values_list("zone", flat=True)
            results += check_consumers(zones=zones)
        elif name == "beat":
            results += check_beat()
        elif name == "tools":
            results += check_tools()
        elif name == "scope":
            results += check_scope(
                networks=Network.objects.values_list("cidr", flat=True),
                exclusions=Exclusion.objects.values_list("cidr", flat=True),
            )
        elif name == "routes":
            # Rows that are no network are the scope check's to report.
            cidrs = Network.objects.values_list("cidr", flat=True)
            results += check_routes(cidrs=[c for c in cidrs if stored_network(c) is not None])
        elif name == "smtp":
            results += check_smtp(
                host=settings.EMAIL_HOST,
                port=settings.EMAIL_PORT,
                use_ssl=settings.EMAIL_USE_SSL,
                use_tls=settings.EMAIL_USE_TLS,
            )
        elif name == "clock":
            results += check_clock()
        elif name == "disk":
            results += check_disk(path=Path(settings.PORTMON_DATA_DIR))
    return results


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


def _ago(age: timedelta) -> str:
    seconds = max(0, int(age.total_seconds()))
    return f"{seconds} s" if seconds < 120 else f"{seconds // 60} min"
