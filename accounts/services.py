"""Account writes: the login visits behind "since your last visit"; API tokens: issue (the
token is shown once) and revoke."""

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import ApiToken, Visit
from audit.services import audit_record


def visit_record(*, user, at: datetime | None = None) -> Visit:
    """At login: the login before this one becomes the start of 'since your last visit'."""
    at = at or timezone.now()
    with transaction.atomic():
        visit, _ = Visit.objects.select_for_update().get_or_create(user=user)
        visit.previous_login = visit.current_login
        visit.current_login = at
        visit.save(update_fields=["previous_login", "current_login"])
    return visit


class ApiTokenError(ValueError):
    """Refused token input; the message is meant for the user."""


@dataclass(frozen=True)
class IssuedApiToken:
    token_id: int
    token: str  # the only time the secret exists outside the client's configuration
    expires_at: datetime | None


def token_hash(secret: str) -> str:
    # 256 random bits: a plain SHA-256 cannot be brute-forced, and a slow password hash
    # would cost every API request tens of milliseconds.
    return hashlib.sha256(secret.encode()).hexdigest()


def api_token_issue(*, user, name: str = "", days: int | None = None) -> IssuedApiToken:
    """A new token for user; days 0: it never expires; None: PORTMON_API_TOKEN_DAYS."""
    days = settings.PORTMON_API_TOKEN_DAYS if days is None else days
    if days < 0:
        raise ApiTokenError("days must be 0 (never expires) or more")
    name = name.strip()
    if len(name) > 100:
        raise ApiTokenError("a token name is at most 100 characters")
    if not user.is_active:
        raise ApiTokenError(f"user {user.username!r} is inactive")
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    now = timezone.now()
    token = ApiToken.objects.create(
        user=user,
        name=name,
        key_id=key_id,
        token_hash=token_hash(secret),
        created_at=now,
        expires_at=now + timedelta(days=days) if days else None,
    )
    audit_record(action="apitoken.issue", target=token, after=_public(token))
    return IssuedApiToken(
        token_id=token.pk, token=f"{key_id}.{secret}", expires_at=token.expires_at
    )


def api_token_revoke(*, token_id: int) -> bool:
    """The token stops working at once; False when it was revoked already."""
    revoked = ApiToken.objects.filter(pk=token_id, revoked_at=None).update(
        revoked_at=timezone.now()
    )
    if revoked:
        token = ApiToken.objects.get(pk=token_id)
        audit_record(action="apitoken.revoke", target=token, after=_public(token))
    return bool(revoked)


def _public(token: ApiToken) -> dict:
    """What the audit log keeps of a token: never its hash."""
    return {
        "user": token.user_id,
        "name": token.name,
        "key_id": token.key_id,
        "expires_at": token.expires_at,
        "revoked_at": token.revoked_at,
    }
