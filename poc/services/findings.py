"""A run's verdict: stored, then applied to its finding through the public event path
(raise, reopen on a positive check, fix on a negative one)."""

import logging
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from alerts.models import OPEN_STATES, AlertEvent, EventKind, EventState
from alerts.services.events import Candidate, TransitionError, event_transition, events_raise
from alerts.signals import events_raised
from poc.checks import Verdict
from poc.models import PocCheck, PocResult, PocState
from scanner.models import Host

logger = logging.getLogger(__name__)

# Severities whose finding alerts at once (the rest wait for the digest).
IMMEDIATE_SEVERITIES = frozenset({"high", "critical"})


def poc_record(
    *, run: PocCheck, token: str, verdict: Verdict, at: datetime | None = None
) -> PocResult | None:
    """Store the verdict and apply it to the finding: raise, reopen (positive) or fix
    (negative). Exactly once: the run must still be ours."""
    at = at or timezone.now()
    with transaction.atomic():
        done = PocCheck.objects.filter(pk=run.pk, claim=token, state=PocState.RUNNING).update(
            state=PocState.DONE, active_key=None, finished_at=at, error=""
        )
        if done != 1:
            return None  # another task took the run over; its verdict counts
        result = PocResult.objects.create(
            run=run, host_id=run.host_id, proto=run.proto, port=run.port, check_name=run.check_name,
            vulnerable=verdict.vulnerable, severity=verdict.severity, title=verdict.title,
            evidence=verdict.evidence, checked_at=at,
        )  # fmt: skip
        event_id = _finding_apply(result=result, host=run.host, at=at)
        if event_id:
            PocResult.objects.filter(pk=result.pk).update(event_id=event_id)
            result.event_id = event_id
    return result


def _finding_apply(*, result: PocResult, host: Host, at: datetime) -> int | None:
    findings = [
        e
        for e in AlertEvent.objects.filter(
            host_id=result.host_id,
            proto=result.proto,
            port=result.port,
            kind=EventKind.POC_FINDING,
        ).order_by("-created_at", "-id")  # fmt: skip
        if isinstance(e.detail, dict) and e.detail.get("check") == result.check_name
    ]
    latest = findings[0] if findings else None
    if not result.vulnerable:
        if latest is not None and latest.state in OPEN_STATES:
            event_transition(
                event_id=latest.pk, to_state=EventState.FIXED, at=at,
                note=f"PoC re-check negative ({result.check_name}): {result.evidence[:200]}",
            )  # fmt: skip
            return latest.pk
        return None
    if latest is not None and latest.state in (*OPEN_STATES, EventState.IGNORED):
        return latest.pk  # already open, or the team chose to ignore it
    if latest is not None and latest.state == EventState.FIXED:
        # Only a positive check reopens a finding (a scan seeing the port does not).
        try:
            event_transition(
                event_id=latest.pk, to_state=EventState.REOPENED, at=at,
                note=f"PoC check positive again ({result.check_name})",
            )  # fmt: skip
        except TransitionError as exc:
            logger.warning("PoC finding %s not reopened: %s", latest.pk, exc)
            return latest.pk
        ids = [latest.pk]
        transaction.on_commit(
            lambda: events_raised.send(sender=AlertEvent, event_ids=ids, run_id=None)
        )
        return latest.pk
    detail = {
        "check": result.check_name,
        "severity": result.severity,
        "title": result.title,
        "reason": result.severity,
        "evidence": result.evidence,
        "poc_result": result.pk,
        "zone": host.network.zone if host.network is not None else "",
    }
    raised = events_raise(
        candidates=[
            Candidate(
                host_id=result.host_id,
                ip=host.ip,
                zone=str(detail["zone"]),
                proto=result.proto,
                port=result.port,
                kind=EventKind.POC_FINDING,
                detail=detail,
                immediate=result.severity in IMMEDIATE_SEVERITIES,
                subkey=result.check_name,
            )  # fmt: skip
        ],
        at=at,
    )
    # One open finding per (port, check): the check's name is the event's subkey.
    return raised.event_ids[0] if raised.event_ids else None
