"""Signal receivers: queue immediate alerts as soon as new or reopened events committed,
and have them sent at once."""

import logging

from django.db import transaction

from alerts.notify.services.immediate import immediate_queue

log = logging.getLogger(__name__)


def on_events_raised(sender, event_ids: list[int], run_id: int | None = None, **kwargs) -> None:
    """Queue alerts for the immediate ones among these events, then a send on commit.

    The every-minute sender stays the retry path (a send that fails, a broker that is
    down). Never raises into the code that raised the events: a failure here is caught up
    by the sender's sweep.
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
        # On commit: a worker must find the messages (and never sends rolled-back ones).
        transaction.on_commit(lambda: _send_queue(run_id))


def _send_queue(run_id: int | None) -> None:
    from alerts.notify.tasks import send_due

    try:
        send_due.apply_async()
    except Exception:
        log.exception("run %s: immediate send not queued; the minute tick sends it", run_id)
