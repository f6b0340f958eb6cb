"""Signal receivers: queue immediate alerts as soon as new or reopened events committed."""

import logging

from alerts.notify.services import immediate_queue

log = logging.getLogger(__name__)


def on_events_raised(sender, event_ids: list[int], run_id: int | None = None, **kwargs) -> None:
    """Queue alerts for the immediate ones among these events; the every-minute sender
    delivers them.

    Never raises into the code that raised the events: a failure here is caught up by the
    sender's sweep.
    """
    try:
        created = immediate_queue(event_ids=event_ids)
    except Exception:
        log.exception(
            "queueing immediate alerts for %d event(s) of run %s failed; the sweep retries",
            len(event_ids),
            run_id,
        )
        return
    if created:
        log.info("run %s: %d immediate alert messages queued", run_id, created)
