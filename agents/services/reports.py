"""Ingest one agent report: replay checks, inventory and history, events for new owners."""

import functools
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, connection, models, transaction

from agents.diff import NEW_PROCESS, PROCESS_CHANGED, AddressRefused, agent_diff, sockets_by_port
from agents.models import Agent, AgentReport, ProcessSocket, SocketChange
from agents.schema import Report
from agents.selectors import AgentHosts, agent_hosts
from alerts.services.events import Candidate, events_raise

BATCH_SIZE = 1000
# last_seen of a socket that is still there moves in steps of this much: a report that
# changes nothing then writes no inventory row (one UPDATE per agent per step instead of one
# per report). gone_at, first_seen and every change are exact.
LAST_SEEN_STEP = timedelta(minutes=30)


class StaleReport(ValueError):
    """A report refused for replay protection (409): old sequence, outside the window."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class IngestResult:
    duplicate: bool = False
    sockets: int = 0
    events: int = 0


def report_window_check(*, report: Report, now: datetime) -> None:
    skew = timedelta(seconds=settings.PORTMON_AGENT_CLOCK_SKEW)
    if report.collected_at > now + skew:
        raise StaleReport("collected_at", "collected_at is in the future (check the agent's clock)")
    if report.collected_at < now - timedelta(seconds=settings.PORTMON_AGENT_MAX_AGE):
        raise StaleReport("collected_at", "collected_at is older than the server accepts")


def report_ingest(
    *, agent_id: int, report: Report, now: datetime, hosts: AgentHosts | None = None
) -> IngestResult:
    """Record a report once. Raises AddressRefused (a socket on another host's address,
    nothing written) and StaleReport (a sequence not above the last, outside the window).

    A report already recorded (same report id: a retried delivery) is a no-op, whatever
    its sequence says.
    """
    hosts = hosts or agent_hosts(agent_id=agent_id)
    if hosts is None:
        raise AddressRefused("sockets", "any address (the agent has no enrolled address)")
    grouped = sockets_by_port(report.sockets, hosts.addresses)  # 403 before any write
    report_window_check(report=report, now=now)
    at = report.collected_at
    digest = inventory_digest(grouped)
    try:
        return _ingest(agent_id, report, now, grouped=grouped, hosts=hosts, digest=digest, at=at)
    except IntegrityError:
        # The same report id under another (higher) sequence: the claim passed, the
        # report row's unique key did not, and the whole transaction was rolled back.
        if _recorded(agent_id, report):
            return IngestResult(duplicate=True)
        raise


def _recorded(agent_id: int, report: Report) -> bool:
    return AgentReport.objects.filter(agent_id=agent_id, report_id=report.report_id).exists()


def _ingest(agent_id, report, now, *, grouped, hosts, digest, at) -> IngestResult:
    with transaction.atomic():
        # The claim (a conditional UPDATE, exactly one row): this report is the agent's
        # next one. Its row lock holds the agent's other deliveries until the commit, so
        # two copies of one report cannot both be recorded. Steady state first: the same
        # digest as the last report, inventory written less than a step ago: nothing to
        # read or write but the claim and the report row.
        same = digest == hosts.inventory_hash and _claim(
            agent_id, report, now, digest=digest, unchanged=True
        )
        claimed = same or _claim(agent_id, report, now, digest=digest, unchanged=False)
        if not claimed:
            if _recorded(agent_id, report):
                return IngestResult(duplicate=True)
            last = Agent.objects.filter(pk=agent_id).values_list("last_seq", flat=True).first()
            raise StaleReport("seq", f"seq {report.seq} is not above the last accepted {last}")
        events = 0 if same else _inventory_update(agent_id, grouped, hosts, at=at, now=now)
        _report_insert(agent_id, report, now, events=events)
    return IngestResult(sockets=len(report.sockets), events=events)


# The two statements every report runs are plain SQL built once per process and backend
# from the models' table and column names: the ORM compiled each UPDATE and INSERT anew,
# ~0.6 ms of a steady-state report's 3.5 ms of CPU (bench/agent_bench.py, py-spy).


def _column(model: type[models.Model], name: str) -> str:
    field = model._meta.get_field(name)
    # A column of the model, not a reverse relation.
    assert isinstance(field, models.Field) and field.column is not None
    return field.column


@functools.cache
def _claim_sql(vendor: str, unchanged: bool) -> str:
    q, meta = connection.ops.quote_name, Agent._meta
    col = {name: q(_column(Agent, name)) for name in (
        "id", "last_seq", "last_report_at", "inventory_hash", "inventory_at",
    )}  # fmt: skip
    sets = ["last_seq", "last_report_at", "inventory_hash"]
    if not unchanged:
        sets.append("inventory_at")
    where = f"{col['id']} = %s AND {col['last_seq']} < %s"
    if unchanged:
        where += f" AND {col['inventory_hash']} = %s AND {col['inventory_at']} >= %s"
    assignments = ", ".join(f"{col[name]} = %s" for name in sets)
    return f"UPDATE {q(meta.db_table)} SET {assignments} WHERE {where}"


def _claim(agent_id: int, report: Report, now: datetime, *, digest: str, unchanged: bool) -> bool:
    """The agent's row moves to this report's sequence if it is above the last one (and,
    `unchanged`, if the inventory has this digest and was written less than a step ago)."""
    when = connection.ops.adapt_datetimefield_value
    params = [report.seq, when(now), digest]
    if unchanged:
        params += [agent_id, report.seq, digest, when(report.collected_at - LAST_SEEN_STEP)]
    else:
        params += [when(report.collected_at), agent_id, report.seq]
    with connection.cursor() as cursor:
        cursor.execute(_claim_sql(connection.vendor, unchanged), params)
        # Matched rows on MySQL too: Django connects with CLIENT.FOUND_ROWS.
        return cursor.rowcount == 1


_REPORT_COLUMNS = ("agent", "report_id", "seq", "collected_at", "received_at", "sockets", "events")


@functools.cache
def _report_sql(vendor: str) -> str:
    q, meta = connection.ops.quote_name, AgentReport._meta
    columns = ", ".join(q(_column(AgentReport, name)) for name in _REPORT_COLUMNS)
    marks = ", ".join(["%s"] * len(_REPORT_COLUMNS))
    return f"INSERT INTO {q(meta.db_table)} ({columns}) VALUES ({marks})"


def _report_insert(agent_id: int, report: Report, now: datetime, *, events: int) -> None:
    when = connection.ops.adapt_datetimefield_value
    params: list = [agent_id, report.report_id, report.seq, when(report.collected_at), when(now)]
    with connection.cursor() as cursor:
        cursor.execute(_report_sql(connection.vendor), [*params, len(report.sockets), events])


def inventory_digest(grouped: dict) -> str:
    """One digest of everything a report says (hosts, ports, owners and their details)."""
    items = sorted(
        (key, seen.socket.pid, seen.socket.user, seen.socket.cmdline,
         seen.socket.started_at.timestamp() if seen.socket.started_at else None,
         sorted(seen.addresses))
        for key, seen in grouped.items()
    )  # fmt: skip
    return hashlib.blake2b(repr(items).encode(), digest_size=16).hexdigest()


def _inventory_update(agent_id: int, grouped: dict, hosts: AgentHosts, *, at, now) -> int:
    """The long way: diff against the inventory, write it, raise events; returns events."""
    rows = {
        ((r[1], r[2], r[3]), (r[4], r[5])): r
        # order_by(): no sort for a dict (the model orders by host, port, first seen).
        for r in ProcessSocket.objects.filter(agent_id=agent_id, gone_at=None)
        .order_by()
        .values_list("pk", "host_id", "proto", "port", "name", "exe", "detail_hash", "last_seen")
    }
    diff = agent_diff(rows.keys(), grouped.keys())
    _inventory_write(agent_id=agent_id, rows=rows, grouped=grouped, diff=diff, at=at)
    candidates = [
        _candidate(change, grouped, ips=hosts.ips, zones=hosts.zones, agent=hosts.name)
        for change in diff.of_kind(NEW_PROCESS, PROCESS_CHANGED)
    ]
    if not candidates:
        return 0
    return len(events_raise(candidates=candidates, at=now).event_ids)


def _inventory_write(*, agent_id: int, rows: dict, grouped: dict, diff, at: datetime) -> None:
    """rows: {(port key, identity): (pk, host_id, proto, port, name, exe, detail_hash,
    last_seen)}."""
    unchanged, refreshed = [], []
    for key in diff.kept:
        row, values = rows[key], _details(grouped[key])
        if values["detail_hash"] == row[6]:
            if row[7] < at - LAST_SEEN_STEP:
                unchanged.append(row[0])
        else:
            # A restart (new PID, same identity) or new arguments: the row follows it.
            refreshed.append(ProcessSocket(pk=row[0], last_seen=at, **values))
    if refreshed:
        ProcessSocket.objects.bulk_update(refreshed, [*values, "last_seen"], batch_size=BATCH_SIZE)
    if unchanged:
        ProcessSocket.objects.filter(pk__in=unchanged).update(last_seen=at)
    gone = [rows[(c.key, c.identity)][0] for c in diff.of_kind("gone")]
    if gone:
        ProcessSocket.objects.filter(pk__in=gone).update(gone_at=at)
    new_rows, history = [], []
    for change in diff.changes:
        host_id, proto, port = change.key
        name, exe = change.identity
        if change.kind != "gone":
            seen = grouped[(change.key, change.identity)]
            new_rows.append(
                ProcessSocket(
                    agent_id=agent_id,
                    host_id=host_id,
                    proto=proto,
                    port=port,
                    name=name,
                    exe=exe,
                    first_seen=at,
                    last_seen=at,
                    **_details(seen),
                )
            )
        kind = {
            "gone": SocketChange.Kind.GONE,
            NEW_PROCESS: SocketChange.Kind.APPEARED,
            PROCESS_CHANGED: SocketChange.Kind.OWNER_CHANGED,
        }[change.kind]
        old_name, old_exe = change.previous or ("", "")
        history.append(
            SocketChange(
                agent_id=agent_id,
                host_id=host_id,
                proto=proto,
                port=port,
                kind=kind,
                name=name,
                exe=exe,
                old_name=old_name,
                old_exe=old_exe,
                at=at,
            )
        )
    ProcessSocket.objects.bulk_create(new_rows, batch_size=BATCH_SIZE)
    SocketChange.objects.bulk_create(history, batch_size=BATCH_SIZE)


def _details(seen) -> dict:
    sock = seen.socket
    values = {
        "pid": sock.pid,
        "user": sock.user,
        "cmdline": sock.cmdline,
        "started_at": sock.started_at,
        "addresses": sorted(seen.addresses),
    }
    started = sock.started_at.timestamp() if sock.started_at else None
    digest = repr((sock.pid, sock.user, sock.cmdline, started, values["addresses"]))
    values["detail_hash"] = hashlib.blake2b(digest.encode(), digest_size=8).hexdigest()
    return values


def _candidate(change, grouped, *, ips, zones, agent: str) -> Candidate:
    host_id, proto, port = change.key
    seen = grouped[(change.key, change.identity)]
    detail = {
        "source": "agent",
        "agent": agent,
        "process": seen.socket.name,
        "exe": seen.socket.exe,
        "pid": seen.socket.pid,
        "user": seen.socket.user,
        "cmdline": seen.socket.cmdline,
        "addresses": sorted(seen.addresses),
        "zone": zones[host_id],
    }
    if change.previous:
        detail["previous_process"], detail["previous_exe"] = change.previous
    return Candidate(
        host_id=host_id, ip=ips[host_id], zone=zones[host_id], proto=proto, port=port,
        kind=change.kind, detail=detail,
    )  # fmt: skip
