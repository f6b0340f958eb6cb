"""Signal receivers: queue immediate alerts as soon as a diff has committed its events."""

import logging

from alerts.notify.services import immediate_queue

log = logging.getLogger(__name__)


def on_diff_finished(sender, run_id: int, event_ids: list[int], **kwargs) -> None:
    """Queue alerts for the run's immediate events; the every-minute sender delivers them.

    Never raises into the diff: a failure here is caught up by the sender's sweep.
    """
    try:
        created = immediate_queue(event_ids=event_ids)
    except Exception:
        log.exception("queueing immediate alerts for run %s failed; the sweep retries", run_id)
        return
    if created:
        log.info("run %s: %d immediate alert messages queued", run_id, created)
