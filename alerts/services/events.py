"""Event triage: state transitions with an audit row each, notes."""

from collections.abc import Iterable
from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from alerts.models import (
    OPEN_STATES,
    AlertEvent,
    EventAudit,
    EventNote,
    EventState,
    open_key_for,
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
) -> AlertEvent:
    """Move one event to another state, writing an audit row (and the note, if any)."""
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
            event.open_key = open_key_for(event.host_id, event.proto, event.port, event.kind)
            event.resolved_at = None
        else:
            event.open_key = None
            event.resolved_at = at
        try:
            with transaction.atomic():
                event.save(update_fields=["state", "updated_at", "open_key", "resolved_at"])
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
        )
        if note:
            EventNote.objects.create(event=event, author=actor, text=note, created_at=at)
    return event


def events_transition(
    *, event_ids: Iterable[int], to_state: str, actor=None, note: str = ""
) -> tuple[list[int], dict[int, str]]:
    """Bulk triage: (changed ids, {id: why not}) — one bad event does not stop the rest."""
    changed, refused = [], {}
    for event_id in event_ids:
        try:
            event_transition(event_id=event_id, to_state=to_state, actor=actor, note=note)
            changed.append(event_id)
        except (TransitionError, AlertEvent.DoesNotExist) as exc:
            refused[event_id] = str(exc)
    return changed, refused


def event_note_add(*, event_id: int, author=None, text: str) -> EventNote:
    text = text.strip()
    if not text:
        raise ValueError("a note needs text")
    return EventNote.objects.create(event_id=event_id, author=author, text=text)
