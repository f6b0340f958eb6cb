"""Signal receivers: chain PoC checks from newly raised events."""

import logging

log = logging.getLogger(__name__)


def on_events_raised(sender, event_ids: list[int], run_id: int | None = None, **kwargs) -> None:
    """Queue the checks for chained events; never raises into the code that raised them
    (a failure here costs the checks of these events, logged)."""
    from poc.services import pocs_chain

    try:
        queued = pocs_chain(event_ids=event_ids)
    except Exception:
        log.exception(
            "chaining PoC checks for %d event(s) of run %s failed", len(event_ids), run_id
        )
        return
    if queued:
        log.info("run %s: %d PoC check(s) queued", run_id, len(queued))
