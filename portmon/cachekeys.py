"""Cache keys from any values: a fixed prefix and a digest, valid for every cache backend
(memcached refuses spaces and control characters, and keys over 250 characters)."""

import hashlib


def cache_key(prefix: str, *parts: object) -> str:
    """ "prefix:<sha1 of the parts>"; parts are compared as text (a datetime, None, a number)."""
    digest = hashlib.sha1("\x1f".join(map(str, parts)).encode(), usedforsecurity=False)
    return f"{prefix}:{digest.hexdigest()}"
