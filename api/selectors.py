"""API token lookup (authentication reads it on every token request)."""

import hmac
import re
from datetime import timedelta

from django.utils import timezone

from api.models import ApiToken
from api.services import token_hash

USED_STEP = timedelta(hours=1)
# Keys of DRF's plaintext tokens, moved into ApiToken by migration 0002: the first 16
# characters are their key id, the whole key is hashed.
LEGACY_KEY = re.compile(r"[0-9a-f]{40}")
_DUMMY_HASH = token_hash("")


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
