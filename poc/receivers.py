"""Signal receivers: chain PoC checks from newly raised events."""

import logging

log = logging.getLogger(__name__)


def on_events_raised(sender, event_ids: list[int], run_id: int | None = None, **kwargs) -> None:
    """Hand the events to the poc queue, which plans their checks (poc.chain).

    Planning costs a few queries per event (a first scan raises thousands): it runs on the
    poc worker, not inside the diff that raised them. Never raises into that code: a
    failure here costs the checks of these events, logged.
    """
    from scanner.services.publish import task_by_name

    try:
        task_by_name("poc.chain").apply_async(args=[list(event_ids)])
    except Exception:
        log.exception(
            "chaining PoC checks for %d event(s) of run %s failed", len(event_ids), run_id
        )


def on_run_diffed(sender, run_id: int, **kwargs) -> None:
    """Hand a diffed run to the poc queue, which verifies every exposure it found that no
    check has looked at yet (poc.cover), baseline and learning-window ports included."""
    from scanner.services.publish import task_by_name

    try:
        task_by_name("poc.cover").apply_async(args=[run_id])
    except Exception:
        log.exception("verifying the exposures of run %s failed to queue", run_id)
