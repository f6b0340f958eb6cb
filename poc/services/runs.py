"""Run one PoC check: claim it like a fingerprint port, keep the claim alive, check scope
again, run the check in a child process, hand the verdict on to be recorded."""

import ipaddress
import logging

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from poc import engine
from poc.models import PocCheck, PocResult, PocState
from poc.services.findings import poc_record
from scanner.services.liveness import Heartbeat, stale_before
from scanner.services.scope import scope_load

logger = logging.getLogger(__name__)


class ClaimHeartbeat(Heartbeat):
    """Keeps a run's claim alive while its check runs (a side thread), as fingerprints do."""

    def __init__(self, *, check_id: int, token: str):
        self.row = PocCheck.objects.filter(pk=check_id, claim=token, state=PocState.RUNNING)
        super().__init__(self._beat)

    def _beat(self) -> None:
        self.row.update(claimed_at=timezone.now())


def poc_claim(*, check_id: int, token: str) -> PocCheck | None:
    """Take a pending run, take back our own (a redelivered task), or take over one whose
    heartbeat stopped; None if another task holds it or it is finished."""
    now = timezone.now()
    claimed = PocCheck.objects.filter(
        Q(state=PocState.PENDING)
        | Q(state=PocState.RUNNING, claim=token)
        | Q(state=PocState.RUNNING, claimed_at__lt=stale_before()),
        pk=check_id,
    ).update(state=PocState.RUNNING, claim=token, claimed_at=now, attempts=F("attempts") + 1)
    if claimed != 1:
        return None
    return PocCheck.objects.select_related("host").get(pk=check_id)


def poc_finish(*, check_id: int, token: str, state: str, error: str = "") -> bool:
    """End a run we hold (failed or skipped); False if another task took it over."""
    return bool(
        PocCheck.objects.filter(pk=check_id, claim=token, state=PocState.RUNNING).update(
            state=state, active_key=None, finished_at=timezone.now(), error=error[:300]
        )
    )


def poc_run(*, check_id: int, token: str) -> PocResult | None:
    """Claim, check scope again, run the check, record the verdict. None: nothing recorded
    (held elsewhere, finished, out of scope, or no verdict)."""
    run = poc_claim(check_id=check_id, token=token[:32])
    if run is None:
        return None
    token = token[:32]
    if run.attempts > settings.PORTMON_POC_MAX_ATTEMPTS:
        poc_finish(check_id=check_id, token=token, state=PocState.FAILED,
                   error=f"gave up after {run.attempts - 1} attempts")  # fmt: skip
        return None
    # Scope may have changed since the event queued this: the worker decides, as for shards.
    if not scope_load().allows(ipaddress.ip_address(run.host.ip)):
        logger.warning("PoC %s: %s is no longer in scope; not run", check_id, run.host.ip)
        poc_finish(check_id=check_id, token=token, state=PocState.SKIPPED,
                   error="target is no longer in scope")  # fmt: skip
        return None
    with ClaimHeartbeat(check_id=check_id, token=token):
        outcome = engine.check_run(
            check=run.check_name, ip=run.host.ip, port=run.port,
            timeout=settings.PORTMON_POC_CHECK_TIMEOUT,
        )  # fmt: skip
    if outcome.verdict is None:
        # No verdict is not a negative one: an open finding stays open.
        poc_finish(check_id=check_id, token=token, state=PocState.FAILED, error=outcome.error)
        return None
    return poc_record(run=run, token=token, verdict=outcome.verdict)


def poc_abandon(*, check_id: int, token: str, reason: str) -> None:
    """A task killed by its hard limit: the check process died with it; no verdict."""
    PocCheck.objects.filter(pk=check_id, claim=token[:32], state=PocState.RUNNING).update(
        state=PocState.FAILED, active_key=None, finished_at=timezone.now(), error=reason[:300]
    )
