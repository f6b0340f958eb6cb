"""Celery interface of notifications: thin, named, idempotent."""

from celery import shared_task

from alerts.notify.services.delivery import messages_send_due
from alerts.notify.services.digest import digest_queue
from alerts.notify.services.immediate import immediate_sweep


# No Celery retries: a failed send is rescheduled in the outbox, and beat runs this every
# minute, so the next pass is the retry.
@shared_task(name="notify.send_due", soft_time_limit=240, time_limit=300, max_retries=0)
def send_due() -> dict:
    queued = immediate_sweep()
    report = messages_send_due()
    return {"queued": queued, **vars(report)}


@shared_task(
    name="notify.digest", soft_time_limit=540, time_limit=600, max_retries=0, acks_late=True
)
def digest() -> dict:
    # Redelivered or run twice on the same day: the dedupe keys make the second a no-op.
    created = digest_queue()
    report = messages_send_due()
    return {"queued": len(created), **vars(report)}
