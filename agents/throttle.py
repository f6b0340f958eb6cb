"""Per-agent rate limit on the shared cache (Redis when configured, else the database):
every web process counts against the same window."""

import time
from functools import cache as once

from django.conf import settings
from django.core.cache import cache

WINDOW = 60  # seconds


@once
def _redis():
    """The cache's Redis, or None (database cache). Django's RedisCache builds a client
    object per call and needs two round trips for incr(): at hundreds of reports a second
    that was a fifth of the request's CPU, so the counter talks to Redis itself."""
    options = settings.CACHES["default"]
    if not options["BACKEND"].endswith("RedisCache"):
        return None
    import redis

    return redis.Redis.from_url(options["LOCATION"])


def report_throttle(*, agent_id: int, now: float | None = None) -> int:
    """Count one report; 0 when it may go on, else seconds until the window ends."""
    limit = settings.PORTMON_AGENT_RATE
    if limit <= 0:
        return 0
    now = time.time() if now is None else now
    window = int(now // WINDOW)
    key = rate_key(agent_id=agent_id, window=window)
    client = _redis()
    if client is not None:
        # INCR and EXPIRE in one round trip; INCR is atomic across web processes.
        count, _ = client.pipeline(transaction=False).incr(key).expire(key, WINDOW * 2).execute()
    else:
        # add() then incr(): on the database cache two processes may both read the same
        # count, so a burst can pass the limit by the number of web workers.
        cache.add(key, 0, timeout=WINDOW * 2)
        try:
            count = cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout=WINDOW * 2)
            count = 1
    if count > limit:
        return max(1, (window + 1) * WINDOW - int(now))
    return 0


def rate_key(*, agent_id: int, window: int) -> str:
    prefix = settings.CACHES["default"].get("KEY_PREFIX", "")
    return f"{prefix}:agents:rate:{agent_id}:{window}"


def rate_reset(*, agent_id: int, window: int) -> None:
    """Forget a window's count (tests; an operator lifting a limit by hand)."""
    client = _redis()
    key = rate_key(agent_id=agent_id, window=window)
    if client is not None:
        client.delete(key)
    else:
        cache.delete(key)
