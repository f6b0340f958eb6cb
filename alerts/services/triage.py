"""Triage from the events list: bulk acknowledge / ignore with a reason / fixed / accept
the risk until a date, refusing events someone else changed since the list was read;
and the lapse of accepted risks (the event reopens)."""

from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from alerts.models import AlertEvent, EventAudit, EventState
from alerts.services.events import TransitionError, event_transition

ACKNOWLEDGE, IGNORE, FIX, ACCEPT = "acknowledge", "ignore", "fix", "accept"
# action -> (state it sets, label). Ignoring or accepting needs a reason; accepting a date.
TRIAGE_ACTIONS = {
    ACKNOWLEDGE: (EventState.ACKNOWLEDGED, "acknowledge"),
    IGNORE: (EventState.IGNORED, "ignore"),
    FIX: (EventState.FIXED, "fixed"),
    ACCEPT: (EventState.IGNORED, "accept the risk until"),
}
NEEDS_REASON = frozenset({IGNORE, ACCEPT})


class TriageError(ValueError):
    """A bulk action that cannot start (no reason, no date); meant for the user."""


@dataclass
class TriageResult:
    changed: list[int] = field(default_factory=list)
    refused: dict[int, str] = field(default_factory=dict)  # id: why not


def _changed_by(event_id: int) -> str:
    last = (
        EventAudit.objects.filter(event_id=event_id)
        .select_related("actor")
        .order_by("-at", "-id")
        .first()
    )
    if last is None or last.actor is None:
        return "by Portmon"
    return f"by {last.actor.get_username()}"


def events_triage(
    *,
    event_ids: list[int],
    action: str,
    actor=None,
    reason: str = "",
    until: datetime | None = None,
    seen: dict[int, str] | None = None,
    at: datetime | None = None,
) -> TriageResult:
    """Apply one triage action to many events; one refused event does not stop the rest.

    `seen`: {id: state} as the list showed them. An event whose state differs now was
    triaged by someone else meanwhile: it is left as it is and reported, not overwritten.
    """
    at = at or timezone.now()
    if action not in TRIAGE_ACTIONS:
        raise TriageError(f"unknown action {action!r}")
    reason = reason.strip()
    if action in NEEDS_REASON and not reason:
        raise TriageError(f"{TRIAGE_ACTIONS[action][1]}: give a reason")
    if action == ACCEPT and (until is None or until <= at):
        raise TriageError("accept the risk until: give a date in the future")
    to_state = TRIAGE_ACTIONS[action][0]
    comment = f"risk accepted until {until:%Y-%m-%d}" if action == ACCEPT else ""
    result = TriageResult()
    for event_id in dict.fromkeys(event_ids):
        with transaction.atomic():
            current = (
                AlertEvent.objects.select_for_update()
                .filter(pk=event_id)
                .values_list("state", flat=True)
                .first()
            )
            if current is None:
                result.refused[event_id] = f"event {event_id} does not exist"
                continue
            expected = (seen or {}).get(event_id)
            if expected and expected != current:
                result.refused[event_id] = (
                    f"event {event_id} was changed meanwhile ({current} "
                    f"{_changed_by(event_id)}): left as it is"
                )
                continue
            try:
                event_transition(
                    event_id=event_id,
                    to_state=to_state,
                    actor=actor,
                    note=reason,
                    at=at,
                    comment=comment,
                    accepted_until=until if action == ACCEPT else None,
                )
            except TransitionError as exc:
                result.refused[event_id] = str(exc)
                continue
        result.changed.append(event_id)
    return result


def acceptances_lapse(*, at: datetime | None = None) -> list[int]:
    """Ignored events whose accepted risk ran out reopen (audit: by Portmon, why). One
    that cannot reopen (another event is open for its port) just loses its date."""
    at = at or timezone.now()
    due = list(
        AlertEvent.objects.filter(state=EventState.IGNORED, accepted_until__lte=at)
        .order_by("id")
        .values_list("pk", "accepted_until")
    )
    reopened = []
    for event_id, until in due:
        try:
            event_transition(
                event_id=event_id,
                to_state=EventState.REOPENED,
                at=at,
                comment=f"accepted risk lapsed on {until:%Y-%m-%d}",
            )
        except TransitionError:
            AlertEvent.objects.filter(pk=event_id).update(accepted_until=None)
            continue
        reopened.append(event_id)
    return reopened
