"""The person behind the current request, for audit rows written by model signals.

A contextvar, not a thread-local: it follows the request through async code and is reset
when the request ends, so a Celery task or a command line records the system (None).
"""

from contextvars import ContextVar

current_actor: ContextVar = ContextVar("portmon_audit_actor", default=None)


class AuditActorMiddleware:
    """Records request.user (when logged in) as the actor of the changes this request makes."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = current_actor.set(_lazy_user(request))
        try:
            return self.get_response(request)
        finally:
            current_actor.reset(token)


def _lazy_user(request):
    # The user is read when a row is written: the API authenticates tokens inside the view,
    # after this middleware ran (it sets request.user then, see api.views).
    return lambda: getattr(request, "user", None)


def actor_now():
    value = current_actor.get()
    user = value() if callable(value) else value
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return user
