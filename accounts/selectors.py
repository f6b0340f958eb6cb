"""Account reads: login visits; the API token lookup (authentication reads it on every
token request)."""

import hmac
import re
from datetime import datetime, timedelta

from django.utils import timezone

from accounts.models import ApiToken, Visit
from accounts.services import token_hash

# last_used_at moves in steps of this, not on every request.
USED_STEP = timedelta(hours=1)
# Keys of DRF's plaintext tokens, moved into ApiToken by migration api 0002: the first 16
# characters are their key id, the whole key is hashed.
LEGACY_KEY = re.compile(r"[0-9a-f]{40}")
_DUMMY_HASH = token_hash("")


def last_visit_start(*, user, default: timedelta = timedelta(days=1)) -> datetime:
    """Where "since your last visit" starts: the login before this one, else `default` ago."""
    visit = Visit.objects.filter(user=user).first()
    return (visit and visit.previous_login) or (timezone.now() - default)


def legacy_key_id(key: str) -> str:
    return f"legacy-{key[:16]}"


def api_token_find(key: str) -> tuple[ApiToken | None, str]:
    """(the token, "") when key is an active token; (None, why) otherwise."""
    if LEGACY_KEY.fullmatch(key):
        key_id, secret = legacy_key_id(key), key
    else:
        key_id, _, secret = key.partition(".")
    token = None
    if key_id and secret and len(key) <= 200:
        token = ApiToken.objects.select_related("user").filter(key_id=key_id).first()
    # Compared in constant time, against a dummy when there is no row.
    ok = hmac.compare_digest(token.token_hash if token else _DUMMY_HASH, token_hash(secret))
    if token is None or not ok or token.revoked_at or not token.user.is_active:
        return None, "invalid or revoked token"
    now = timezone.now()
    if token.expires_at and token.expires_at <= now:
        return None, f"token expired at {token.expires_at:%Y-%m-%d %H:%M} UTC"
    if token.last_used_at is None or token.last_used_at < now - USED_STEP:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token, ""
