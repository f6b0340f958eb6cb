"""Signal receivers: diff each run as soon as the scanner has recorded it."""

import logging

from alerts.services.diff import run_diff

log = logging.getLogger(__name__)


def on_run_finished(sender, run_id: int, **kwargs) -> None:
    """Diff synchronously; on failure the diff rolled back, so queue a retry by id."""
    try:
        run_diff(run_id=run_id)
    except Exception:
        # The scan's results are recorded already; a failing diff must not undo or hide
        # them. The task re-runs it (idempotent: diffed_at was not claimed).
        log.exception("diff of run %s failed; queued for retry", run_id)
        from alerts.tasks import diff_run

        try:
            diff_run.apply_async(args=[run_id], countdown=60)
        except Exception:
            log.exception("could not queue the diff of run %s", run_id)
