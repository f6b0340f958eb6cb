"""Queue PoC runs: one pending run per (port, check), sent to the poc queue on commit;
a triager's re-check of a finding."""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from alerts.models import AlertEvent, EventKind
from alerts.services.events import event_note_add
from poc.checks import checks_load
from poc.models import PocCheck, PocReason, PocState, active_key_for
from scanner.services.publish import task_by_name

logger = logging.getLogger(__name__)

RUN_CHECK = "poc.run_check"


@dataclass(frozen=True)
class PocTarget:
    host_id: int
    proto: str
    port: int
    check: str
    event_id: int | None = None


def pocs_queue(*, targets: list[PocTarget], reason: str, at: datetime | None = None) -> list[int]:
    """Pending runs for these (port, check)s, queued on the poc queue once committed.

    A (port, check) already pending or running is skipped (its active key is taken); a
    chained one that ran within PORTMON_POC_DEDUPE_HOURS is skipped too. Returns new ids.
    """
    at = at or timezone.now()
    recent = at - timedelta(hours=settings.PORTMON_POC_DEDUPE_HOURS)
    created = []
    with transaction.atomic():
        for t in targets:
            key = active_key_for(t.host_id, t.proto, t.port, t.check)
            if reason == PocReason.CHAIN and PocCheck.objects.filter(
                host_id=t.host_id, proto=t.proto, port=t.port, check_name=t.check,
                state=PocState.DONE, finished_at__gte=recent,
            ).exists():  # fmt: skip
                continue
            try:
                with transaction.atomic():
                    row = PocCheck.objects.create(
                        host_id=t.host_id, proto=t.proto, port=t.port, check_name=t.check,
                        reason=reason, event_id=t.event_id, active_key=key, created_at=at,
                    )  # fmt: skip
            except IntegrityError:
                continue  # pending or running already: that run answers for this one too
            created.append(row.pk)
        pocs_publish(check_ids=created)
    return created


def pocs_publish(*, check_ids: list[int]) -> None:
    """Queue the runs on the poc queue once the caller's transaction commits."""

    def send() -> None:
        task = task_by_name(RUN_CHECK)
        for check_id in check_ids:
            try:
                task.apply_async(args=[check_id])
            except Exception as exc:  # broker down: the reaper queues it once it is back
                logger.error("PoC check %s not queued (%s); the reaper will", check_id, exc)
                continue
            PocCheck.objects.filter(pk=check_id).update(queued_at=timezone.now())

    if check_ids:
        transaction.on_commit(send)


class RecheckRefused(ValueError):
    """A re-check that cannot be queued (not a PoC finding, no check named)."""


def poc_recheck(*, event_id: int, author: AbstractBaseUser | None = None) -> int | None:
    """Queue a re-check of a PoC finding now (a triager's button, page or API), whatever its
    state: the verdict fixes, keeps or reopens it as the daily re-check would; the queued
    run is noted on the event (by `author`). Returns the run's id, or None when a run of
    that check on that port is queued or running already."""
    event = AlertEvent.objects.filter(pk=event_id, kind=EventKind.POC_FINDING).first()
    if event is None:
        raise RecheckRefused("only a PoC finding can be re-checked")
    check = event.detail.get("check") if isinstance(event.detail, dict) else None
    if check not in checks_load():
        raise RecheckRefused(f"this finding's check {check!r} is not installed")
    target = PocTarget(event.host_id, event.proto, event.port, check, event.pk)
    ids = pocs_queue(targets=[target], reason=PocReason.MANUAL)
    if not ids:
        return None
    event_note_add(event_id=event_id, author=author, text=f"PoC re-check {ids[0]} queued")
    return ids[0]
