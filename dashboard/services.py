"""Dashboard writes: triage in bulk, notes, PoC re-checks, visits, a policy's run started
by hand."""

from django.db import transaction
from django.utils import timezone

from alerts.services.events import event_note_add, events_transition
from dashboard.models import Visit
from poc.services import poc_recheck
from scanner.models import ScanPolicy, ScanRun
from scanner.services.runs import policy_start

NOTE_MAX = 5000


def events_triage(
    *, event_ids: list[int], to_state: str, actor, note: str = ""
) -> tuple[list[int], dict[int, str]]:
    """Move events to a state with one note each: (changed ids, {id: why not})."""
    note = note.strip()[:NOTE_MAX]
    return events_transition(event_ids=event_ids, to_state=to_state, actor=actor, note=note)


def event_note(*, event_id: int, author, text: str):
    return event_note_add(event_id=event_id, author=author, text=text.strip()[:NOTE_MAX])


def finding_recheck(*, event_id: int, author) -> int | None:
    """Re-run a PoC finding's check now (a triager's button, page or API) and note it on the
    event; the run's id, or None when that check is queued or running already.
    poc.services.RecheckRefused when the event is not a PoC finding."""
    check_id = poc_recheck(event_id=event_id)
    if check_id is not None:
        event_note(event_id=event_id, author=author, text=f"PoC re-check {check_id} queued")
    return check_id


def visit_record(*, user, at=None) -> Visit:
    """At login: the login before this one becomes the start of 'since your last visit'."""
    at = at or timezone.now()
    with transaction.atomic():
        visit, _ = Visit.objects.select_for_update().get_or_create(user=user)
        visit.previous_login = visit.current_login
        visit.current_login = at
        visit.save(update_fields=["previous_login", "current_login"])
    return visit


def policy_run_now(*, policy_id: int) -> ScanRun:
    """Start a policy's run at once (an admin's button); RunError says why not."""
    return policy_start(policy=ScanPolicy.objects.get(pk=policy_id))
