"""Ingest one agent report: replay checks, inventory and history, events for new owners."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction

from agents.diff import NEW_PROCESS, PROCESS_CHANGED, HostAddresses, agent_diff, sockets_by_port
from agents.models import Agent, AgentHost, AgentReport, ProcessSocket, SocketChange
from agents.schema import Report
from alerts.services.events import Candidate, events_raise

BATCH_SIZE = 1000


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


def agent_hosts(*, agent_id: int) -> tuple[HostAddresses, dict[int, str], dict[int, str]]:
    """(addresses, {host_id: ip}, {host_id: zone}) of an agent, in enrolment order."""
    rows = list(
        AgentHost.objects.filter(agent_id=agent_id)
        .order_by("id")
        .values_list("host_id", "host__ip", "host__network__zone")
    )
    return (
        HostAddresses({ip: hid for hid, ip, _ in rows}),
        {hid: ip for hid, ip, _ in rows},
        {hid: zone or "" for hid, _, zone in rows},
    )


def report_window_check(*, report: Report, now: datetime) -> None:
    skew = timedelta(seconds=settings.PORTMON_AGENT_CLOCK_SKEW)
    if report.collected_at > now + skew:
        raise StaleReport("collected_at", "collected_at is in the future (check the agent's clock)")
    if report.collected_at < now - timedelta(seconds=settings.PORTMON_AGENT_MAX_AGE):
        raise StaleReport("collected_at", "collected_at is older than the server accepts")


def report_ingest(*, agent_id: int, report: Report, now: datetime) -> IngestResult:
    """Record a report once. Raises AddressRefused (a socket on another host's address,
    nothing written) and StaleReport (a sequence not above the last, outside the window).

    A report already recorded (same report id: a retried delivery) is a no-op.
    """
    addresses, ips, zones = agent_hosts(agent_id=agent_id)
    grouped = sockets_by_port(report.sockets, addresses)  # AddressRefused before any write
    at = report.collected_at
    with transaction.atomic():
        # The agent's row serialises its reports: two deliveries of one report cannot both
        # pass the duplicate check.
        agent = Agent.objects.select_for_update().only("pk", "name", "last_seq").get(pk=agent_id)
        if AgentReport.objects.filter(agent_id=agent_id, report_id=report.report_id).exists():
            return IngestResult(duplicate=True)
        report_window_check(report=report, now=now)
        if report.seq <= agent.last_seq:
            raise StaleReport(
                "seq", f"seq {report.seq} is not above the last accepted {agent.last_seq}"
            )
        rows = {
            ((r.host_id, r.proto, r.port), (r.name, r.exe)): r
            for r in ProcessSocket.objects.filter(agent_id=agent_id, gone_at=None)
        }
        diff = agent_diff(rows.keys(), grouped.keys())
        _inventory_write(agent_id=agent_id, rows=rows, grouped=grouped, diff=diff, at=at)
        candidates = [
            _candidate(change, grouped, ips=ips, zones=zones, agent=agent.name)
            for change in diff.of_kind(NEW_PROCESS, PROCESS_CHANGED)
        ]
        raised = events_raise(candidates=candidates, at=now) if candidates else None
        events = len(raised.event_ids) if raised else 0
        AgentReport.objects.create(
            agent_id=agent_id,
            report_id=report.report_id,
            seq=report.seq,
            collected_at=at,
            received_at=now,
            sockets=len(report.sockets),
            events=events,
        )
        Agent.objects.filter(pk=agent_id).update(last_seq=report.seq, last_report_at=now)
    return IngestResult(sockets=len(report.sockets), events=events)


def _inventory_write(*, agent_id: int, rows: dict, grouped: dict, diff, at: datetime) -> None:
    kept_ids, refreshed = [], []
    for key in diff.kept:
        row, seen = rows[key], grouped[key]
        kept_ids.append(row.pk)
        values = _details(seen)
        if any(getattr(row, name) != value for name, value in values.items()):
            # A restart (new PID, same identity) or new arguments: the row follows it.
            for name, value in values.items():
                setattr(row, name, value)
            row.last_seen = at
            refreshed.append(row)
    if refreshed:
        ProcessSocket.objects.bulk_update(
            refreshed, [*_DETAIL_FIELDS, "last_seen"], batch_size=BATCH_SIZE
        )
    unchanged = sorted(set(kept_ids) - {row.pk for row in refreshed})
    if unchanged:
        # One UPDATE for the steady state: a report that changes nothing costs one query.
        ProcessSocket.objects.filter(pk__in=unchanged).update(last_seen=at)
    gone = [rows[(c.key, c.identity)].pk for c in diff.of_kind("gone")]
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


_DETAIL_FIELDS = ("pid", "user", "cmdline", "started_at", "addresses")


def _details(seen) -> dict:
    sock = seen.socket
    return {
        "pid": sock.pid,
        "user": sock.user,
        "cmdline": sock.cmdline,
        "started_at": sock.started_at,
        "addresses": sorted(seen.addresses),
    }


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
