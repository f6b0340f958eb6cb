"""Reads: token lookup, inventory, and the cross-check of agent reports with scans."""

import functools
import hmac
import ipaddress
from dataclasses import dataclass

from django.db import connection
from django.db.models import Count, Exists, Manager, OuterRef, Q, QuerySet

from agents.diff import HostAddresses
from agents.models import Agent, AgentHost, ProcessSocket
from agents.services.enrollment import token_hash
from scanner.models import Host, Port, PortState

# Compared against when the key id is unknown, so that a miss costs the same as a hit.
_DUMMY_HASH = token_hash("not a token")


@dataclass(frozen=True)
class AgentHosts:
    """An agent as the ingest needs it: id, name and enrolled addresses."""

    agent_id: int
    name: str
    addresses: HostAddresses
    ips: dict[int, str]  # host_id: ip
    zones: dict[int, str]  # host_id: zone ("" outside scope)
    inventory_hash: str = ""


_HOST_FIELDS = (
    "agent_id", "agent__name", "agent__inventory_hash", "host_id", "host__ip",
    "host__network__zone",
)  # fmt: skip


def _agent_hosts(rows: list[tuple]) -> AgentHosts:
    return AgentHosts(
        agent_id=rows[0][0],
        name=rows[0][1],
        inventory_hash=rows[0][2],
        addresses=HostAddresses({row[4]: row[3] for row in rows}),
        ips={row[3]: row[4] for row in rows},
        zones={row[3]: row[5] or "" for row in rows},
    )


def agent_hosts(*, agent_id: int) -> AgentHosts | None:
    """The agent's name and addresses in enrolment order; None without addresses."""
    rows = list(
        AgentHost.objects.filter(agent_id=agent_id).order_by("id").values_list(*_HOST_FIELDS)
    )
    return _agent_hosts(rows) if rows else None


def _token_query() -> QuerySet:
    return (
        AgentHost.objects.filter(agent__key_id="?")
        .order_by("id")
        .values_list("agent__token_hash", "agent__enabled", *_HOST_FIELDS)
    )


@functools.cache
def _token_sql(vendor: str) -> str:
    # The ORM's SQL for _token_query, built once per process and backend: compiling the
    # join for every report cost a quarter of a steady-state report's CPU. Every column
    # is text or a number, so no converter is skipped by reading the cursor directly.
    sql, params = _token_query().query.sql_with_params()
    assert params == ("?",), params
    return sql


def agent_for_token(token: str) -> AgentHosts | None:
    """The enabled agent the token belongs to, with its addresses, or None (unknown, wrong
    or revoked token). One query: it runs for every report."""
    key_id, _, secret = token.partition(".")
    rows = []
    if key_id and secret and len(token) <= 200:
        with connection.cursor() as cursor:
            cursor.execute(_token_sql(connection.vendor), [key_id])
            rows = cursor.fetchall()
    expected = rows[0][0] if rows else _DUMMY_HASH
    ok = hmac.compare_digest(expected, token_hash(secret))
    if not rows or not ok or not rows[0][1]:
        return None
    return _agent_hosts([row[2:] for row in rows])


# --- Dashboard ------------------------------------------------------------------------
# Owners that went away, listed on the host page after the current ones.
HOST_HISTORY = 20


def host_processes(*, host_id: int, history: int = HOST_HISTORY) -> list[dict]:
    """The host page's "Processes" rows: what its agent reports listening now (by port),
    then the last `history` owners that went away. Flat dicts whose keys are the columns
    (the dashboard's slot contract, dashboard/slots.py)."""
    rows = ProcessSocket.objects.filter(host_id=host_id).select_related("agent")
    current = rows.filter(gone_at=None).order_by("proto", "port", "name")
    gone = rows.exclude(gone_at=None).order_by("-gone_at", "-id")[:history]
    return [
        {
            "port": f"{r.port}/{r.proto}",
            "process": r.name,
            "exe": r.exe,
            "pid": "" if r.pid is None else r.pid,
            "user": r.user,
            "listening on": ", ".join(r.addresses),
            "first seen": r.first_seen,
            "last seen": r.last_seen,
            "state": "listening" if r.gone_at is None else "gone",
            "gone at": r.gone_at or "",
            "agent": r.agent.name,
        }
        for r in [*current, *gone]
    ]


def agents_list() -> QuerySet:
    """Every agent with its addresses and how many sockets it reports now."""
    return (
        Agent.objects.annotate(listening=Count("sockets", filter=Q(sockets__gone_at=None)))
        .prefetch_related("addresses__host")
        .order_by("name")
    )


# --- Cross-check with scans ----------------------------------------------------------
# Items listed per group; the rest is a count (a first scan of a network without agents
# makes every host "unmanaged").
CROSS_CHECK_LIMIT = 50


@dataclass(frozen=True)
class CheckLine:
    ip: str
    proto: str = ""
    port: int | None = None
    text: str = ""


@dataclass(frozen=True)
class CheckGroup:
    key: str
    title: str
    lines: tuple[CheckLine, ...]
    total: int

    @property
    def more(self) -> int:
        return self.total - len(self.lines)


def _open_ports() -> QuerySet:
    return Port.objects.filter(state=PortState.OPEN)


def _in(qs: QuerySet | Manager, network_ids, field: str) -> QuerySet:
    # A digest recipient scoped to some networks sees those networks' hosts only.
    qs = qs.all()
    return qs if network_ids is None else qs.filter(**{f"{field}__in": network_ids})


def hosts_unmanaged(*, network_ids=None) -> QuerySet:
    """Hosts with open ports (scans) and no agent: nobody reports their processes."""
    return (
        _in(Host.objects, network_ids, "network_id")
        .filter(Exists(_open_ports().filter(host_id=OuterRef("pk"))))
        .filter(agent_host__isnull=True)
        .annotate(open_ports=Count("ports", filter=Q(ports__state=PortState.OPEN)))
        .order_by("ip")
    )


def sockets_unseen_by_scans(*, network_ids=None) -> list[ProcessSocket]:
    """Sockets an agent reports on a non-loopback address of an in-scope host that no scan
    sees open: filtered from outside (a firewall), or scans do not cover that port."""
    query = (
        _in(ProcessSocket.objects, network_ids, "host__network_id")
        .filter(gone_at=None, host__network__isnull=False)
        .exclude(
            Exists(
                _open_ports().filter(
                    host_id=OuterRef("host_id"), proto=OuterRef("proto"), port=OuterRef("port")
                )
            )
        )
        .select_related("host")
        .order_by("host__ip", "proto", "port")
    )
    rows: list[ProcessSocket] = [
        row for row in query if any(not _loopback(a) for a in row.addresses)
    ]
    udp = [row for row in rows if row.proto == "udp"]
    if udp:
        # A UDP socket no scan saw is news only where a UDP scan looked: most UDP sockets
        # (clients, resolvers' source ports, silent services) never answer a probe.
        covered = _udp_covered({row.host.network_id for row in udp if row.host.network_id})
        rows = [
            row
            for row in rows
            if row.proto != "udp" or _udp_port_covered(covered, row.host, row.port)
        ]
    return rows


def _udp_covered(network_ids: set[int]) -> dict[int, list]:
    from alerts.diff import Span, ranges_parse
    from scanner.selectors import coverage_spans

    return {
        net_id: [Span(at, ranges_parse(a), ranges_parse(p), proto) for at, a, p, proto in spans]
        for net_id, spans in coverage_spans(network_ids=network_ids, before=_far_future()).items()
    }


def _udp_port_covered(covered: dict[int, list], host: Host, port: int) -> bool:
    address = int(ipaddress.ip_address(host.ip))
    spans = covered.get(host.network_id, []) if host.network_id is not None else []
    return any(s.covers(address, port, "udp") for s in spans)


def _far_future():
    from datetime import UTC, datetime

    return datetime(9999, 1, 1, tzinfo=UTC)


def ports_unreported_by_agents(*, network_ids=None) -> QuerySet:
    """Open ports (scans) on hosts whose agent reports, that the agent does not list:
    something it cannot see (a container, another network namespace, a NAT rule)."""
    reported = ProcessSocket.objects.filter(
        host_id=OuterRef("host_id"), proto=OuterRef("proto"), port=OuterRef("port"), gone_at=None
    )
    return (
        _in(_open_ports(), network_ids, "host__network_id")
        .filter(host__agent_host__agent__last_report_at__isnull=False)
        .exclude(Exists(reported))
        .select_related("host")
        .order_by("host__ip", "proto", "port")
    )


def cross_check(*, network_ids=None, limit: int = CROSS_CHECK_LIMIT) -> tuple[CheckGroup, ...]:
    """The three cross-checks for the digest and the dashboard; empty groups left out.
    network_ids: only hosts in those networks (None: all)."""
    unmanaged = hosts_unmanaged(network_ids=network_ids)
    unseen = sockets_unseen_by_scans(network_ids=network_ids)
    unreported = ports_unreported_by_agents(network_ids=network_ids)
    groups = (
        CheckGroup(
            "unmanaged",
            "Hosts with open ports and no agent",
            tuple(CheckLine(h.ip, text=f"{h.open_ports} open port(s)") for h in unmanaged[:limit]),
            unmanaged.count(),
        ),
        CheckGroup(
            "unseen",
            "Listening on the network, never seen by a scan (filtered?)",
            tuple(CheckLine(s.host.ip, s.proto, s.port, _process(s)) for s in unseen[:limit]),
            len(unseen),
        ),
        CheckGroup(
            "unreported",
            "Seen by scans, not reported by the host's agent (container, namespace, NAT?)",
            tuple(
                CheckLine(p.host.ip, p.proto, p.port, p.service or "") for p in unreported[:limit]
            ),
            unreported.count(),
        ),
    )
    return tuple(g for g in groups if g.total)


def _process(row: ProcessSocket) -> str:
    return f"{row.name or '?'} ({row.exe})" if row.exe else row.name or "?"


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
