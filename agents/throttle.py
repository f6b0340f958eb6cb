"""Per-agent rate limit on the shared cache (Redis when configured, else the database):
every web process counts against the same window."""

import time

from django.conf import settings
from django.core.cache import cache

WINDOW = 60  # seconds


def report_throttle(*, agent_id: int, now: float | None = None) -> int:
    """Count one report; 0 when it may go on, else seconds until the window ends."""
    limit = settings.PORTMON_AGENT_RATE
    if limit <= 0:
        return 0
    now = time.time() if now is None else now
    window = int(now // WINDOW)
    key = f"agents:rate:{agent_id}:{window}"
    # add() then incr(): atomic on Redis; on the database cache two processes may both
    # read the same count, so a burst can pass the limit by the number of web workers.
    cache.add(key, 0, timeout=WINDOW * 2)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=WINDOW * 2)
        count = 1
    if count > limit:
        return max(1, (window + 1) * WINDOW - int(now))
    return 0
