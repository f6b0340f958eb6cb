"""Alert events: the one path that raises them (scan diff, host agents, PoC checks),
reopening, and triage (state transitions with an audit row each, notes)."""

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import Exists, F, OuterRef, QuerySet
from django.utils import timezone

from alerts.kinds import severity_for
from alerts.models import (
    OPEN_STATES,
    AlertEvent,
    EventAudit,
    EventKind,
    EventNote,
    EventState,
    Rule,
    open_key_for,
    open_key_of,
)
from alerts.rules import DENY, RuleBook, Subject
from alerts.selectors import rule_specs_load
from alerts.signals import events_raised

# Ids or keys per IN (...) list: SQLite's default limit of bound variables is 32766 (999 on
# very old builds); 900 keeps every backend happy and the query count low.
CHUNK = 900
# Rows per INSERT/UPDATE batch.
BATCH_SIZE = 1000
# Characters a triage note keeps (a page's form, the API, the admin alike).
NOTE_MAX = 5000


def chunks(items: list, size: int = CHUNK) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(frozen=True)
class Candidate:
    """Something that may become an alert event: a diff's finding about a port, a host
    agent's new process (detail["process"]), a PoC check's result."""

    host_id: int
    ip: str
    zone: str
    proto: str
    port: int
    kind: str
    detail: dict = field(default_factory=dict)
    immediate: bool = False
    # Raised only when a deny rule matches: a port the diff found quiet (back within its
    # window) but blacklisted.
    only_if_denied: bool = False
    # One open event per (host, proto, port, kind, subkey): a PoC finding per check.
    subkey: str = ""

    def subject(self) -> Subject:
        process = self.detail.get("process") or ""
        return Subject(
            ip=self.ip, proto=self.proto, port=self.port, zone=self.zone, process=process
        )


@dataclass(frozen=True)
class RaiseResult:
    event_ids: tuple[int, ...] = ()
    created: dict[str, int] = field(default_factory=dict)  # events per kind


def events_raise(
    *,
    candidates: Iterable[Candidate],
    at: datetime,
    run_id: int | None = None,
    book: RuleBook | None = None,
) -> RaiseResult:
    """Candidates become events: rules decide (deny beats allow; an allow keeps the event,
    suppressed), a key that already has an open event adds nothing, each event gets an
    audit row and its rule a hit. events_raised is sent once the transaction commits.

    `book`: the rules at `at`, when the caller matches many batches against them.
    """
    book = book if book is not None else RuleBook(rule_specs_load(), at=at)
    drafts: dict[str, AlertEvent] = {}
    for c in candidates:
        decision = book.decide(c.subject())
        if c.only_if_denied and decision.action != DENY:
            continue
        key = open_key_for(c.host_id, c.proto, c.port, c.kind, c.subkey)
        detail = {**c.detail, "subkey": c.subkey} if c.subkey else c.detail
        drafts.setdefault(
            key,
            AlertEvent(
                host_id=c.host_id,
                proto=c.proto,
                port=c.port,
                kind=c.kind,
                state=EventState.NEW,
                run_id=run_id,
                created_at=at,
                updated_at=at,
                detail=detail,
                suppressed=decision.suppressed,
                rule_id=decision.rule_id,
                immediate=c.immediate or decision.immediate,
                open_key=key,
                severity=severity_for(c.kind, c.detail),
            ),
        )
    if not drafts:
        return RaiseResult()
    with transaction.atomic():
        taken: set[str | None] = set()
        for chunk in chunks(list(drafts)):
            existing = AlertEvent.objects.filter(open_key__in=chunk)
            taken.update(existing.values_list("open_key", flat=True))
        rows = [event for key, event in drafts.items() if key not in taken]
        # ignore_conflicts: a concurrent writer that took an open key first wins, quietly.
        # It also leaves the new rows without ids, so they are read back by key; a row
        # with another run or time under one of these keys is that writer's.
        AlertEvent.objects.bulk_create(rows, batch_size=BATCH_SIZE, ignore_conflicts=True)
        ours: list = []
        for chunk in chunks([event.open_key for event in rows]):
            ours.extend(
                AlertEvent.objects.filter(
                    open_key__in=chunk, run_id=run_id, created_at=at
                ).values_list("pk", "kind", "rule_id")
            )
        ours.sort()
        hits = Counter(rule_id for _, _, rule_id in ours if rule_id)
        for rule_id, n in hits.items():
            Rule.objects.filter(pk=rule_id).update(hit_count=F("hit_count") + n, last_hit_at=at)
        EventAudit.objects.bulk_create(
            [
                EventAudit(event_id=pk, actor=None, action="raised", to_state=EventState.NEW, at=at)
                for pk, _, _ in ours
            ],
            batch_size=BATCH_SIZE,
        )
        event_ids = [pk for pk, _, _ in ours]
        _announce_on_commit(event_ids=event_ids, run_id=run_id)
    return RaiseResult(
        event_ids=tuple(event_ids), created=dict(Counter(kind for _, kind, _ in ours))
    )


# Kinds a port seen open by a scan does not reopen (see events_reopen_seen).
NOT_REOPENED_BY_SCANS = (
    EventKind.CLOSED,
    EventKind.POC_FINDING,
    EventKind.NEW_PROCESS,
    EventKind.PROCESS_CHANGED,
)


def events_reopen_seen(
    *, seen: QuerySet, at: datetime, run_id: int | None = None, comment: str = ""
) -> list[int]:
    """Fixed events whose port is among `seen` (rows with host_id, proto and port, such as
    a run's observations) go back to reopened when they were fixed before `at`; each gets
    an audit row, and events_raised announces them once the transaction commits.

    Closed-port events are left alone: a closed port that is back raises "reopened".
    PoC findings too: a port seen open says nothing about its password; only a positive
    check reopens a finding (poc.services.findings). Host-agent events too: a scan sees the port,
    not which process owns it; the agent's next report says that (agents.services).
    """
    same_port = seen.filter(
        host_id=OuterRef("host_id"), proto=OuterRef("proto"), port=OuterRef("port")
    )
    comment = comment or (f"seen again by run {run_id}" if run_id else "seen again")
    reopened = []
    with transaction.atomic():
        fixed = list(
            AlertEvent.objects.filter(state=EventState.FIXED, resolved_at__lt=at)
            .exclude(kind__in=NOT_REOPENED_BY_SCANS)
            .filter(Exists(same_port))
            .select_for_update()
        )
        for event in fixed:
            key = open_key_of(event)
            if AlertEvent.objects.filter(open_key=key).exists():
                continue  # an open event already says the same thing
            AlertEvent.objects.filter(pk=event.pk, state=EventState.FIXED).update(
                state=EventState.REOPENED, open_key=key, resolved_at=None, updated_at=at
            )
            EventAudit.objects.create(
                event=event,
                actor=None,
                action="reopened",
                from_state=EventState.FIXED,
                to_state=EventState.REOPENED,
                at=at,
                comment=comment,
            )
            reopened.append(event.pk)
        _announce_on_commit(event_ids=reopened, run_id=run_id)
    return reopened


def _announce_on_commit(*, event_ids: list[int], run_id: int | None) -> None:
    if event_ids:
        ids = list(event_ids)
        transaction.on_commit(
            lambda: events_raised.send(sender=AlertEvent, event_ids=ids, run_id=run_id)
        )


# Who may go where. "reopened" is normally set by the diff (a fixed port came back);
# a person may also reopen an ignored or fixed event by hand.
TRANSITIONS: dict[str, frozenset[str]] = {
    EventState.NEW: frozenset({EventState.ACKNOWLEDGED, EventState.IGNORED, EventState.FIXED}),
    EventState.ACKNOWLEDGED: frozenset({EventState.IGNORED, EventState.FIXED}),
    EventState.REOPENED: frozenset({EventState.ACKNOWLEDGED, EventState.IGNORED, EventState.FIXED}),
    EventState.IGNORED: frozenset({EventState.REOPENED}),
    EventState.FIXED: frozenset({EventState.REOPENED}),
}


class TransitionError(ValueError):
    """A state change that is not allowed; the message is meant for the user."""


def event_transition(
    *,
    event_id: int,
    to_state: str,
    actor=None,
    note: str = "",
    at: datetime | None = None,
    comment: str = "",
    accepted_until: datetime | None = None,
) -> AlertEvent:
    """Move one event to another state, writing an audit row (and the note, if any).
    `accepted_until`: an ignored event's accepted risk ends then (any other change clears
    it)."""
    at = at or timezone.now()
    if to_state not in EventState.values:
        raise TransitionError(f"unknown state {to_state!r}")
    with transaction.atomic():
        event = AlertEvent.objects.select_for_update().get(pk=event_id)
        from_state = event.state
        if to_state not in TRANSITIONS.get(from_state, ()):
            raise TransitionError(f"event {event_id}: cannot go from {from_state} to {to_state}")
        event.state = to_state
        event.updated_at = at
        if to_state in OPEN_STATES:
            event.open_key = open_key_of(event)
            event.resolved_at = None
        else:
            event.open_key = None
            event.resolved_at = at
        event.accepted_until = accepted_until if to_state == EventState.IGNORED else None
        try:
            with transaction.atomic():
                event.save(
                    update_fields=[
                        "state",
                        "updated_at",
                        "open_key",
                        "resolved_at",
                        "accepted_until",
                    ]
                )
        except IntegrityError:
            other = AlertEvent.objects.filter(open_key=event.open_key).values_list("pk", flat=True)
            raise TransitionError(
                f"event {event_id}: event {other.first()} is already open for this port"
            ) from None
        EventAudit.objects.create(
            event=event,
            actor=actor,
            action="transition",
            from_state=from_state,
            to_state=to_state,
            at=at,
            comment=comment[:300],
        )
        if note:
            EventNote.objects.create(event=event, author=actor, text=note, created_at=at)
    return event


def events_transition(
    *, event_ids: Iterable[int], to_state: str, actor=None, note: str = ""
) -> tuple[list[int], dict[int, str]]:
    """Bulk triage: (changed ids, {id: why not}) — one bad event does not stop the rest."""
    note = note.strip()[:NOTE_MAX]
    changed, refused = [], {}
    for event_id in event_ids:
        try:
            event_transition(event_id=event_id, to_state=to_state, actor=actor, note=note)
            changed.append(event_id)
        except (TransitionError, AlertEvent.DoesNotExist) as exc:
            refused[event_id] = str(exc)
    return changed, refused


def event_note_add(*, event_id: int, author=None, text: str) -> EventNote:
    text = text.strip()[:NOTE_MAX]
    if not text:
        raise ValueError("a note needs text")
    return EventNote.objects.create(event_id=event_id, author=author, text=text)
