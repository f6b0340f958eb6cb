"""API token authentication, for the API and /metrics alike: strict header parsing and a
lockout per address after repeated bad tokens (django-axes counts them, as it counts bad
passwords; `manage.py axes_reset_ip ADDRESS` or the admin's access attempts unlock)."""

from django.contrib.auth.signals import user_login_failed
from django.http import HttpRequest
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication

from accounts.selectors import api_token_find

# The "user name" axes files bad API tokens under: failures count per (this, address).
TOKEN_CREDENTIALS = {"username": "<api token>"}
LOCKED_OUT = (
    "too many failed token attempts from this address; an admin can unlock it "
    "(manage.py axes_reset_ip ADDRESS)"
)


def token_authenticate(request: HttpRequest, *, keywords: tuple[str, ...] = ("token",)):
    """(user, token) for `Authorization: <keyword> <key>`; None when no such header.

    Raises AuthenticationFailed for a malformed header or a wrong key (counted against the
    address), Throttled while the address is locked out, even for a good key.
    """
    from axes.handlers.proxy import AxesProxyHandler

    parts = request.headers.get("Authorization", "").split()
    if not parts or parts[0].lower() not in keywords:
        return None
    if AxesProxyHandler.is_locked(request, TOKEN_CREDENTIALS):
        raise exceptions.Throttled(detail=LOCKED_OUT)
    if len(parts) != 2:
        user_login_failed.send(__name__, credentials=TOKEN_CREDENTIALS, request=request)
        raise exceptions.AuthenticationFailed("the header must be: Token <key>, nothing else")
    token, why = api_token_find(parts[1])
    if token is None:
        user_login_failed.send(__name__, credentials=TOKEN_CREDENTIALS, request=request)
        raise exceptions.AuthenticationFailed(why)
    return token.user, token


class LockoutTokenAuthentication(TokenAuthentication):
    """DRF's token authentication through token_authenticate (strict, locked out per address)."""

    def authenticate(self, request):
        return token_authenticate(request._request)
