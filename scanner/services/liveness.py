"""Liveness of claimed work: heartbeats written from a side thread, and when they are stale."""

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

logger = logging.getLogger(__name__)

HEARTBEAT_EVERY_S = 2.0  # shard progress and claims are written at most this often


def stale_before() -> datetime:
    """A claim whose heartbeat is older than this belongs to a dead worker."""
    return timezone.now() - timedelta(seconds=settings.PORTMON_HEARTBEAT_TIMEOUT)


def beat_loop(beat: Callable[[], None], stop: threading.Event) -> None:
    """Call beat every HEARTBEAT_EVERY_S until stopped; a failed write is retried next time."""
    try:
        while not stop.wait(HEARTBEAT_EVERY_S):
            try:
                beat()
            except Exception:
                logger.warning("heartbeat write failed; retrying", exc_info=True)
    finally:
        connection.close()


def start_unless_in_transaction(thread: threading.Thread) -> None:
    # Writes made inside the caller's open transaction are invisible to everyone else,
    # and on SQLite the thread's own writes would wait on that transaction's lock: a
    # heartbeat is only meaningful, and only safe, between transactions.
    if not connection.in_atomic_block:
        thread.daemon = True
        thread.start()


class Heartbeat:
    """Calls beat() every HEARTBEAT_EVERY_S from a side thread while the `with` block runs.

    Subclasses pass the write that proves their claim alive (a shard's progress, a
    fingerprint or PoC task's claimed rows).
    """

    def __init__(self, beat: Callable[[], None]):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=beat_loop, args=(beat, self._stop))

    def __enter__(self):
        start_unless_in_transaction(self._thread)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
