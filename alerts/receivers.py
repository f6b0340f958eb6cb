"""Signal receivers: queue each run's diff once the scanner's records are committed."""

import logging

from django.db import transaction

log = logging.getLogger(__name__)


def on_run_finished(sender, run_id: int, **kwargs) -> None:
    """Queue alerts.diff_run on commit: a general worker diffs, not the scanner's task.

    On commit, because a worker must find the run finished (a rolled-back run is never
    diffed); the diff itself is claimed once through diffed_at, so a second queueing is a
    no-op.
    """
    transaction.on_commit(lambda: _diff_queue(run_id))


def _diff_queue(run_id: int) -> None:
    from alerts.tasks import diff_run

    try:
        diff_run.delay(run_id)
    except Exception:
        # The scan's results are recorded already; a broker that is down (or, with tasks
        # run eagerly, a diff that failed) must not undo or hide them. The beat task
        # alerts.diff_pending diffs every finished run left undiffed.
        log.exception("run %s: diff not queued; alerts.diff_pending will diff it", run_id)
