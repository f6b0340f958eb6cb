"""The reaper: hand on runs whose task died or whose message was lost, and queue the
daily re-check of open findings."""

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from alerts.models import OPEN_STATES, AlertEvent, EventKind
from poc.models import PocCheck, PocReason, PocResult, PocState
from poc.services.queue import PocTarget, pocs_publish, pocs_queue
from scanner.services.liveness import stale_before

logger = logging.getLogger(__name__)


def pocs_reap(*, now: datetime | None = None) -> int:
    """Hand on runs whose task died (heartbeat stopped) or whose message was lost, and
    queue the daily re-check of open findings. Returns the runs queued."""
    now = now or timezone.now()
    dead = list(
        PocCheck.objects.filter(state=PocState.RUNNING, claimed_at__lt=stale_before())
        .values_list("pk", flat=True)
    )  # fmt: skip
    if dead:
        PocCheck.objects.filter(pk__in=dead, state=PocState.RUNNING).update(
            state=PocState.PENDING, claim=""
        )
    quiet_before = now - timedelta(seconds=settings.PORTMON_REQUEUE_AFTER)
    busy = PocCheck.objects.filter(state=PocState.RUNNING, claimed_at__gte=stale_before())
    lost = []
    if not busy.exists():
        lost = list(
            PocCheck.objects.filter(state=PocState.PENDING)
            .filter(Q(queued_at__isnull=True) | Q(queued_at__lt=quiet_before))
            .exclude(pk__in=dead)
            .values_list("pk", flat=True)
        )
    handed = dead + lost
    with transaction.atomic():
        pocs_publish(check_ids=handed)
    if handed:
        logger.warning("re-queued %d PoC check(s) whose task died or was lost", len(handed))
    return len(handed) + len(pocs_recheck_due(now=now))


def pocs_recheck_due(*, now: datetime | None = None) -> list[int]:
    """Queue a re-check of every open finding whose last result is older than
    PORTMON_POC_RECHECK_HOURS."""
    now = now or timezone.now()
    due_before = now - timedelta(hours=settings.PORTMON_POC_RECHECK_HOURS)
    targets = []
    for event in AlertEvent.objects.filter(kind=EventKind.POC_FINDING, state__in=OPEN_STATES):
        check = event.detail.get("check") if isinstance(event.detail, dict) else None
        if not check:
            continue
        last = (
            PocResult.objects.filter(
                host_id=event.host_id, proto=event.proto, port=event.port, check_name=check
            )
            .values_list("checked_at", flat=True)
            .first()
        )
        if last is None or last < due_before:
            targets.append(PocTarget(event.host_id, event.proto, event.port, check, event.pk))
    return pocs_queue(targets=targets, reason=PocReason.RECHECK, at=now) if targets else []
