"""A generated month of daily nmap XML files with known changes, and its alert score.

Used by tests/alerts/test_alert_quality.py (small) and bench/alert_quality_bench.py (about
1,000 hosts x 30 days). What happens, on days chosen at random from a seed:
- every port is missed at random by 1-2% of the scans (its own rate), except high-risk
  ports, which re-alert after any miss by design ("no N-day grace"); never 3 scans in a
  row (3 healthy runs missing a port is a closure by the rule) nor next to the degraded day;
- real openings (some high-risk), new hosts, closures, hosts absent for 2 days (nothing to
  say) or 5 days (closed, then reopened), service changes;
- coverage grows on day 11 (1-1024 -> 1-65535: ports above 1024 appear, as baseline), and
  one host in ten has open ports only above 1024: no scan finds anything on it before
  coverage grows, yet every scan covered its address (coverage is what was scanned, not who
  answered); new hosts appear on both sides of the growth;
  fingerprinting is off for the first days (-sS without -sV), then on;
- one degraded day (the scan reached 30% of the hosts).
The expected alerts are the known changes, on the first day a file shows them.
"""

import ipaddress
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

from tests.alerts.nmapxml import nmap_xml

NET = "198.18.0.0/22"
DAY0 = datetime(2026, 6, 1, 2, 0, tzinfo=UTC)
POOL = [
    (22, "ssh", "OpenSSH"),
    (80, "http", "nginx"),
    (443, "https", "nginx"),
    (8080, "http", "Apache Tomcat"),
    (3000, "http", "Node.js Express"),
    (8443, "https", "Jetty"),
    (25, "smtp", "Postfix smtpd"),
    (53, "domain", "dnsmasq"),
]
HIGH_RISK = [(6379, "redis", "Redis key-value store"), (5432, "postgresql", "PostgreSQL DB")]
HIGH_PORT = (50000, "http", "custom app")  # outside the first coverage
NARROW_HI = 1024
NARROW, WIDE = f"1-{NARROW_HI}", "1-65535"
# Hosts with nothing open inside the first coverage: their only ports lie above it.
HIDDEN_POOL = [p for p in POOL if p[0] > NARROW_HI] + [HIGH_PORT]
CLOSE_AFTER = 3  # PORTMON_CLOSED_AFTER_RUNS
WINDOW = 3  # PORTMON_NEW_PORT_DAYS: a port first covered less than this ago is still learnt
Key = tuple[str, str, int, int]  # (kind, ip, port, day)


@dataclass
class Month:
    days: int
    files: list[Path] = field(default_factory=list)
    expected: set[Key] = field(default_factory=set)
    degraded_day: int = 0
    # What was planned, for the report: {what: count}.
    planned: dict[str, int] = field(default_factory=dict)
    # {ip: {port: [[from_day, to_day_exclusive, service, product]]}}: what was open when.
    truth: dict = field(default_factory=dict)

    def at(self, day: int) -> datetime:
        return DAY0 + timedelta(days=day)


def month_generate(out: Path, *, hosts: int = 1000, days: int = 30, seed: int = 15) -> Month:
    rng = random.Random(seed)
    month = Month(days=days, degraded_day=days * 2 // 3)
    deg, grow_day, fp_day = month.degraded_day, days // 3, 2
    healthy = [d for d in range(days) if d != deg]
    addresses = [str(a) for a in list(ipaddress.ip_network(NET).hosts())[:hosts]]
    newcomers = set(addresses[-(hosts // 10) :])
    hidden = set(rng.sample(sorted(set(addresses) - newcomers), max(1, hosts // 10)))

    def covered_from(port: int) -> int:
        return 0 if port <= NARROW_HI else grow_day

    # truth[ip] = {port: [(from_day, to_day_exclusive, service, product)]}
    truth: dict[str, dict[int, list[list]]] = {}
    first_day: dict[str, int] = {}
    # Event days: after the baseline is learnt (3 days) and fingerprints exist, and such
    # that closing (3 healthy days) or coming back never falls on the degraded day.
    event_days = [d for d in range(fp_day + 3, days - 6) if d not in range(deg - 5, deg + 1)]
    for ip in addresses:
        if ip in hidden:
            ports = rng.sample(HIDDEN_POOL, rng.randint(1, 2))
        else:
            ports = rng.sample(POOL, rng.randint(1, 3))
        truth[ip] = {p: [[0, days, s, prod]] for p, s, prod in ports}
        first_day[ip] = rng.choice(event_days) if ip in newcomers else 0
        if ip not in newcomers and ip not in hidden and rng.random() < 0.05:
            truth[ip][HIGH_PORT[0]] = [[0, days, *HIGH_PORT[1:]]]
    # Closures, absences and service changes need a port visible from day 0 (a host seen
    # for the first time after an absence is news: nothing answered there before).
    hidden.update(ip for ip in addresses if ip not in newcomers and min(truth[ip]) > NARROW_HI)
    steady = [ip for ip in addresses if ip not in newcomers and ip not in hidden]
    rng.shuffle(steady)
    take = iter(steady)
    protected: dict[str, set[int]] = {}  # ip -> days without random misses
    expect: list[tuple[str, str, int, int]] = []  # (kind, ip, port, from_day): first sighting
    # (ip, port, gone from, back on or None): closed after 3 healthy runs that covered it.
    closing: list[tuple[str, int, int, int | None]] = []

    def quiet(ip, *around):
        protected.setdefault(ip, set()).update(d + k for d in around for k in (-1, 0, 1))

    for _ in range(max(1, hosts // 20)):  # openings on existing hosts
        ip, d = next(take), rng.choice(event_days)
        port, s, prod = rng.choice([p for p in POOL if p[0] not in truth[ip]])
        truth[ip][port] = [[d, days, s, prod]]
        expect.append(("new_port", ip, port, d))
    for _ in range(max(1, hosts // 100)):  # high-risk openings
        ip, d = next(take), rng.choice(event_days)
        port, s, prod = rng.choice(HIGH_RISK)
        truth[ip][port] = [[d, days, s, prod]]
        expect.append(("high_risk", ip, port, d))
    for _ in range(max(1, hosts // 50)):  # closures
        ip, d = next(take), rng.choice(event_days)
        port = rng.choice([p for p in truth[ip] if p <= NARROW_HI] or list(truth[ip]))
        truth[ip][port][0][1] = d
        closing.append((ip, port, d, None))
        quiet(ip, d)
    absent: dict[str, range] = {}
    for length in [5] * max(1, hosts // 100) + [2] * max(1, hosts // 100):
        # Not away while coverage grows: a port first seen after the window that followed
        # the growth is news, as nothing answered there when it was first scanned.
        ip = next(take)
        d = rng.choice([d for d in event_days if not d <= grow_day < d + length])
        absent[ip] = range(d, d + length)
        quiet(ip, d, d + length)
        if length >= CLOSE_AFTER:
            for port in truth[ip]:
                closing.append((ip, port, d, d + length))
    for _ in range(max(1, hosts // 40)):  # service changes
        ip, d = next(take), rng.choice(event_days)
        narrow = [p for p in truth[ip] if p <= NARROW_HI]
        if not narrow:
            continue
        port = rng.choice(narrow)
        _, end, _, _ = truth[ip][port][0]
        truth[ip][port] = [[0, d, *truth[ip][port][0][2:]], [d, end, "http", "Apache httpd"]]
        if truth[ip][port][0][3] == "Apache httpd":
            truth[ip][port][1][2:] = ["http", "lighttpd"]
        expect.append(("service_changed", ip, port, d))
    for ip in newcomers:
        for port in truth[ip]:
            expect.append(("new_port", ip, port, first_day[ip]))

    reached_on_deg = set(rng.sample(addresses, len(addresses) * 3 // 10))
    rate = {(ip, p): rng.uniform(0.01, 0.02) for ip in addresses for p in truth[ip]}
    risky = {p for p, _, _ in HIGH_RISK}
    seen: dict[tuple[str, int], list[int]] = {}
    # Days in a row a port open and covered went unreported: a random miss never makes it 3
    # (3 healthy runs missing a port is what closes it) nor touches the degraded day's
    # neighbours (a gap of 4 days around it would be "not seen for 4 days").
    unreported: dict[tuple[str, int], int] = {}
    calm = set(range(deg - 2, deg + 3))
    out.mkdir(parents=True, exist_ok=True)
    for day in range(days):
        ports_spec = NARROW if day < grow_day else WIDE
        reported: dict[str, list] = {}
        for ip in addresses:
            if day < first_day[ip] or day in absent.get(ip, ()):
                continue
            for port, spans in truth[ip].items():
                span = next((s for s in spans if s[0] <= day < s[1]), None)
                if span is None or (port > NARROW_HI and day < grow_day):
                    continue
                if day == deg and ip not in reached_on_deg:
                    unreported[ip, port] = unreported.get((ip, port), 0) + 1
                    continue
                noisy = (
                    port not in risky
                    and day not in protected.get(ip, ())
                    and day not in calm
                    and unreported.get((ip, port), 0) < CLOSE_AFTER - 1
                )
                if noisy and rng.random() < rate[ip, port]:
                    unreported[ip, port] = unreported.get((ip, port), 0) + 1
                    continue
                unreported[ip, port] = 0
                service, product = (span[2], span[3]) if day >= fp_day else ("", "")
                reported.setdefault(ip, []).append((port, service, product))
                seen.setdefault((ip, port), []).append(day)
        path = out / f"day{day:02d}.xml"
        start = int(month.at(day).timestamp())
        path.write_text(nmap_xml(targets=NET, ports=ports_spec, hosts=reported, start=start))
        month.files.append(path)

    def first_seen_from(ip, port, day):
        return next((d for d in seen.get((ip, port), []) if d >= day), None)

    for kind, ip, port, day in expect:
        when = first_seen_from(ip, port, day)
        # A port first seen within the window after its first coverage is baseline.
        if kind == "new_port" and when is not None and when - covered_from(port) < WINDOW:
            continue
        if when is not None:
            month.expected.add((kind, ip, port, when))
    for ip, port, day, back in closing:
        last = max((d for d in seen.get((ip, port), []) if d < day), default=None)
        # Healthy runs that covered the port (ports above 1024 only once coverage grew).
        after = [d for d in healthy if last is not None and d > last and d >= covered_from(port)]
        if len(after) < CLOSE_AFTER or (back is not None and after[CLOSE_AFTER - 1] >= back):
            continue
        month.expected.add(("closed", ip, port, after[CLOSE_AFTER - 1]))
        if back is not None and (when := first_seen_from(ip, port, back)) is not None:
            month.expected.add(("reopened", ip, port, when))
    month.truth = truth
    month.planned = {
        "hosts": hosts,
        "hosts open only above the first coverage": len(hidden),
        "days": days,
        "observations": sum(len(v) for v in seen.values()),
        "expected alerts": len(month.expected),
    }
    return month


@dataclass
class Score:
    expected: set[Key]
    actual: set[Key]

    @property
    def precision(self) -> float:
        return len(self.expected & self.actual) / len(self.actual) if self.actual else 1.0

    @property
    def recall(self) -> float:
        return len(self.expected & self.actual) / len(self.expected) if self.expected else 1.0

    def report(self) -> str:
        kinds = sorted({k[0] for k in self.expected | self.actual})
        lines = [f"precision {self.precision:.4f}  recall {self.recall:.4f}"]
        for kind in kinds:
            exp = {k for k in self.expected if k[0] == kind}
            act = {k for k in self.actual if k[0] == kind}
            lines.append(
                f"  {kind:16} expected {len(exp):5}  raised {len(act):5}  right {len(exp & act):5}"
            )
        for label, keys in (
            ("unexpected", self.actual - self.expected),
            ("missing", self.expected - self.actual),
        ):
            for key in sorted(keys, key=lambda k: (k[3], k))[:10]:
                lines.append(f"  {label}: {key}")
        return "\n".join(lines)


# How the month's files reach the diff (bench/alert_quality_bench.py, test_pacing.py):
# in_process: imported and diffed one after the other in this process (no worker);
# one_by_one: a worker is running, each import waits for its diff (scan_import --wait);
# all_at_once: a worker is running, the 30 imports follow each other without waiting;
# worker_later: all imported with no worker running, then one starts;
# shuffled_later: the same, the files imported in a random order (they arrive late and out
# of order: each run is dated by its file, and the diffs go by that date).
PACINGS = ("in_process", "one_by_one", "all_at_once", "worker_later", "shuffled_later")


def month_import(
    month: Month,
    *,
    pacing: str = "in_process",
    start_worker: Callable[[], object] | None = None,
    timeout: float = 600,
) -> Score:
    """Import each day's file with scan_import (dated by the file); score the events."""
    from django.core.management import call_command

    from alerts.services.diff import run_diff
    from scanner.models import ScanRun

    if pacing not in PACINGS:
        raise ValueError(f"pacing must be one of {', '.join(PACINGS)}")
    if pacing in ("one_by_one", "all_at_once"):
        start_worker()
    files = list(month.files)
    if pacing == "shuffled_later":
        random.Random(len(files)).shuffle(files)
    for path in files:
        args = ["--wait", "--wait-timeout", str(timeout)] if pacing == "one_by_one" else []
        call_command("scan_import", str(path), *args, stdout=StringIO())
        if pacing == "in_process":
            # The product queues the diff on commit; here (maybe inside a test's
            # transaction) it runs at once.
            run_diff(run_id=ScanRun.objects.latest("id").pk)
    if pacing in ("worker_later", "shuffled_later"):
        undiffed = ScanRun.objects.filter(diffed_at__isnull=True).count()
        if undiffed != len(month.files):
            raise AssertionError(f"{undiffed} run(s) undiffed before any worker ran")
        start_worker()
    deadline = time.monotonic() + timeout
    while ScanRun.objects.filter(diffed_at__isnull=True).exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"runs not diffed after {timeout:g} s")
        time.sleep(0.2)
    return month_score(month)


def month_score(month: Month) -> Score:
    """The events raised, keyed by the day of their run (runs are dated by their file)."""
    from alerts.models import AlertEvent

    actual = {
        (kind, ip, port, (at - DAY0).days)
        for kind, ip, port, at in AlertEvent.objects.values_list(
            "kind", "host__ip", "port", "run__finished_at"
        )
    }
    return Score(expected=month.expected, actual=actual)
