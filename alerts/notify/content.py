"""What a digest or an alert says, from plain data (no database, no templates)."""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from alerts.severity import Severity
from scanner.targets import address_order

# Retry policy of the outbox: 1, 2, 4, 8, 16, then every 30 minutes. MAX_ATTEMPTS covers
# a bit more than a day of retries, so an SMTP outage of hours loses nothing.
RETRY_BASE = timedelta(minutes=1)
RETRY_CAP = timedelta(minutes=30)
MAX_ATTEMPTS = 60

KIND_LABELS = {
    "new_port": "new port",
    "high_risk": "high-risk port",
    "closed": "closed",
    "reopened": "reopened",
    "service_changed": "service changed",
    "blacklisted": "blacklisted",
    "poc_finding": "PoC finding",
    "new_process": "new process",
    "host_answers_all": "answers on all ports",
}

# (key, title, kinds): the digest's sections in the order a reader wants them.
# Suppressed events appear only under rule hits; a deny hit shows in its kind's section too.
SECTIONS = (
    ("high_risk", "High-risk exposures", ("high_risk", "blacklisted")),
    ("new", "New ports", ("new_port", "reopened", "new_process")),
    ("service_changed", "Service changes", ("service_changed",)),
    ("closed", "Closed ports", ("closed",)),
    ("poc", "PoC findings", ("poc_finding",)),
)
KNOWN_KINDS = {kind for _, _, kinds in SECTIONS for kind in kinds}
# Severity colours of the HTML emails (badge background; white text reads on each).
SEVERITY_COLOURS: dict[int, str] = {
    Severity.CRITICAL: "#7f1d1d",
    Severity.HIGH: "#c2410c",
    Severity.MEDIUM: "#a16207",
    Severity.LOW: "#475569",
}
SEVERITY_LABELS: dict[int, str] = dict(Severity.choices)
# PoC evidence shown in an alert: the first lines of what the check saw (the dashboard
# has the rest); the check itself caps evidence at a few KB.
EVIDENCE_LINES = 20

# Items listed per section; the rest is a count and a link. The first scan of a big network
# makes every port "new": 5,000 events made a 440 KB email, which mail clients choke on.
SECTION_LIMIT = 200


def retry_delay(attempts: int) -> timedelta:
    """Wait before the next try after `attempts` failed ones (exponential, capped)."""
    exponent = max(attempts, 1) - 1
    if exponent >= 16:  # 2**16 minutes is far beyond the cap; avoid huge numbers
        return RETRY_CAP
    return min(RETRY_BASE * (2**exponent), RETRY_CAP)


@dataclass(frozen=True)
class Item:
    """One event as the digest and the alerts show it."""

    event_id: int
    kind: str
    ip: str
    proto: str
    port: int
    network: str
    state: str
    created_at: datetime
    url: str
    detail: dict = field(default_factory=dict)
    suppressed: bool = False
    rule_action: str = ""
    rule_reason: str = ""
    rule_owner: str = ""
    severity: int = Severity.MEDIUM

    @property
    def kind_label(self) -> str:
        return KIND_LABELS.get(self.kind, self.kind.replace("_", " "))

    @property
    def kind_title(self) -> str:
        """The label at the start of a sentence: "PoC finding", "High-risk port" (only the
        first letter raised: str.capitalize would write "Poc finding")."""
        label = self.kind_label
        return label[:1].upper() + label[1:]

    @property
    def severity_label(self) -> str:
        return SEVERITY_LABELS.get(self.severity, str(self.severity))

    @property
    def severity_colour(self) -> str:
        return SEVERITY_COLOURS.get(self.severity, SEVERITY_COLOURS[Severity.MEDIUM])

    @property
    def evidence_lines(self) -> tuple[str, ...]:
        """A PoC finding's evidence, a line each (every line rendered on its own, so a
        line of evidence can never pass for a line of the message)."""
        evidence = (self.detail or {}).get("evidence")
        if not isinstance(evidence, str) or not evidence.strip():
            return ()
        lines = evidence.strip("\n").splitlines()
        if len(lines) > EVIDENCE_LINES:
            lines = [*lines[:EVIDENCE_LINES], f"... ({len(lines) - EVIDENCE_LINES} more lines)"]
        return tuple(lines)

    def age(self, now: datetime) -> str:
        """How long ago the event was raised: "40 min", "5 h", "3 d"."""
        return age_text(now - self.created_at)

    @property
    def endpoint(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        if not self.port:  # an event about the whole host (e.g. it answers on all ports)
            return host
        return f"{host}:{self.port}/{self.proto}"

    @property
    def summary(self) -> str:
        """What changed, in a few words: fingerprints, a PoC's finding, the diff's reason."""
        d = self.detail or {}
        if self.kind == "service_changed":
            old, new = fingerprint_label(d.get("old")), fingerprint_label(d.get("new"))
            if old or new:
                return f"{old or '?'} -> {new or '?'}"
        texts = (d.get(k) for k in ("summary", "title", "finding"))
        text = next((t for t in texts if isinstance(t, str) and t), "")
        text = (
            text
            or fingerprint_label(d.get("fingerprint"))
            or fingerprint_label(d.get("new"))
            or fingerprint_label(d)
        )
        reason = d.get("reason")
        if not isinstance(reason, str):
            reason = ""
        if self.kind == "poc_finding":
            # A PoC finding's "reason" is its severity, shown on its own.
            reason = ""
        if text and reason:
            return f"{text} ({reason})"
        return text or reason

    @property
    def rule_text(self) -> str:
        if not self.rule_action:
            return ""
        verb = "allowed by rule" if self.suppressed else f"{self.rule_action} rule"
        reason = f": {self.rule_reason}" if self.rule_reason else ""
        owner = f" ({self.rule_owner})" if self.rule_owner else ""
        return f"{verb}{reason}{owner}"


def age_text(delta: timedelta) -> str:
    """'40 min', '5 h', '3 d' (rounded down; never negative)."""
    minutes = max(int(delta.total_seconds() // 60), 0)
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} h"
    return f"{minutes // (24 * 60)} d"


def fingerprint_label(value: object) -> str:
    """'mysql MySQL 8.0' from the diff's fingerprint dict (or a plain string)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if isinstance(value.get("label"), str) and value["label"]:
            return value["label"]
        return " ".join(str(value[k]) for k in ("service", "product", "version") if value.get(k))
    return ""


@dataclass(frozen=True)
class RunItem:
    """A degraded run: the reader should know that day's scan is not trusted."""

    run_id: int
    created_at: datetime
    targets: str
    hosts_found: int
    ports_found: int


@dataclass(frozen=True)
class BaselineItem:
    """Ports a run recorded quietly as a network's baseline (or newly covered ports)."""

    run_id: int
    network: str
    ports: int
    hosts: int

    @property
    def line(self) -> str:
        return f"baseline: {self.ports} ports on {self.hosts} hosts recorded for {self.network}"


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    # The items shown (at most SECTION_LIMIT) and how many there were in all.
    items: tuple[Item, ...]
    total: int

    @property
    def more(self) -> int:
        return self.total - len(self.items)


@dataclass(frozen=True)
class Digest:
    recipient: str
    period_start: datetime
    period_end: datetime
    sections: tuple[Section, ...]
    degraded_runs: tuple[RunItem, ...]
    site_url: str
    event_ids: tuple[int, ...]
    # Host agents vs scans (agents.selectors.CheckGroup): unmanaged hosts, ports filtered
    # from outside, ports the agent cannot see. A standing state, not a change: shown in
    # every digest while it lasts, never what makes a digest non-empty.
    agent_checks: tuple = ()
    # One line per network and run that recorded a baseline: news, unlike agent_checks.
    baselines: tuple[BaselineItem, ...] = ()
    # Events raised before this period and still open (new, acknowledged, reopened), oldest
    # first: a standing state like agent_checks, listed every day until someone acts.
    still_open: Section | None = None
    # Every open, unsuppressed event of the recipient's scope by severity (the totals line).
    open_totals: tuple[tuple[int, int], ...] = ()

    @property
    def empty(self) -> bool:
        """Nothing happened in the period (older open events may still be listed)."""
        return not self.sections and not self.degraded_runs and not self.baselines

    @property
    def counts(self) -> dict[str, int]:
        return {s.key: s.total for s in self.sections}

    @property
    def open_total(self) -> int:
        return sum(count for _, count in self.open_totals)

    @property
    def open_text(self) -> str:
        """'9 (1 high, 8 medium)', worst first; 'none' when nothing is open."""
        if not self.open_total:
            return "none"
        parts = ", ".join(
            f"{count} {SEVERITY_LABELS.get(sev, sev)}" for sev, count in self.open_totals
        )
        return f"{self.open_total} ({parts})"

    @property
    def headline(self) -> str:
        """What the subject says after the date: the period's counts, then how many older
        events are still open."""
        if self.still_open:
            return f"{self.period_headline}, {self.still_open.total} still open"
        return self.period_headline

    @property
    def period_headline(self) -> str:
        """Counts of the period's sections, degraded runs and baselines; "no changes"."""
        counts = self.counts
        parts = [
            f"{counts[key]} {label}"
            for key, label in (
                ("high_risk", "high-risk"),
                ("new", "new"),
                ("service_changed", "changed"),
                ("closed", "closed"),
                ("poc", "PoC"),
                ("other", "other"),
            )
            if counts.get(key)
        ]
        if counts.get("rule_hits"):
            parts.append(plural(counts["rule_hits"], "rule hit"))
        if self.degraded_runs:
            parts.append(plural(len(self.degraded_runs), "degraded run"))
        if self.baselines:
            parts.append(plural(len(self.baselines), "baseline"))
        return ", ".join(parts) or "no changes"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def open_section(items: Iterable[Item], total: int) -> Section | None:
    """The "still open" section: given items oldest first, `total` of them in all."""
    items = tuple(items)
    if not total:
        return None
    return Section("still_open", "Still open from before", items, max(total, len(items)))


def sections_build(items: Iterable[Item], *, limit: int = SECTION_LIMIT) -> tuple[Section, ...]:
    """Group items into the digest's sections; empty sections are left out."""
    items = sorted(items, key=lambda i: (i.created_at, address_order(i.ip), i.port, i.event_id))
    visible = [i for i in items if not i.suppressed]
    groups = [
        (key, title, [i for i in visible if i.kind in kinds]) for key, title, kinds in SECTIONS
    ]
    # Kinds this module does not know yet (a later feature) are shown, not dropped.
    groups.append(("other", "Other changes", [i for i in visible if i.kind not in KNOWN_KINDS]))
    groups.append(("rule_hits", "Rule hits", [i for i in items if i.rule_action]))
    return tuple(
        Section(key, title, tuple(chosen[:limit]), len(chosen))
        for key, title, chosen in groups
        if chosen
    )


def digest_build(
    *,
    recipient: str,
    period_start: datetime,
    period_end: datetime,
    items: Iterable[Item],
    degraded_runs: Iterable[RunItem],
    site_url: str,
    agent_checks: Iterable = (),
    baselines: Iterable[BaselineItem] = (),
    still_open: Section | None = None,
    open_totals: dict[int, int] | None = None,
) -> Digest:
    items = list(items)
    return Digest(
        recipient=recipient,
        period_start=period_start,
        period_end=period_end,
        sections=sections_build(items),
        degraded_runs=tuple(sorted(degraded_runs, key=lambda r: (r.created_at, r.run_id))),
        site_url=site_url,
        event_ids=tuple(sorted(i.event_id for i in items)),
        agent_checks=tuple(agent_checks),
        baselines=tuple(sorted(baselines, key=lambda b: (b.run_id, b.network))),
        still_open=still_open,
        open_totals=tuple(sorted((open_totals or {}).items(), reverse=True)),
    )


def digest_top(digest: Digest, *, limit: int) -> tuple[tuple[Item, ...], int]:
    """The digest's events worst first, then oldest first (the period's and the still
    open ones, allowed ones left out): (at most `limit` of them, how many more)."""
    seen: dict[int, Item] = {}
    sections = [s for s in digest.sections if s.key != "rule_hits"]
    if digest.still_open:
        sections.append(digest.still_open)
    for section in sections:
        for item in section.items:
            if not item.suppressed:
                seen.setdefault(item.event_id, item)
    ranked = sorted(seen.values(), key=lambda i: (-i.severity, i.created_at, i.event_id))
    hidden = sum(s.more for s in sections)
    return tuple(ranked[:limit]), len(ranked) - min(len(ranked), limit) + hidden
