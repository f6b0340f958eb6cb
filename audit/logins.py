"""Login lockouts in the audit log: who was locked out from where, and when a lockout was
cleared (an admin deleted the access attempt, `manage.py axes_reset`, or it expired)."""

from django.contrib.auth import get_user_model
from django.http import HttpRequest

from audit.context import actor_now
from audit.models import AuditEntry


def client_address(request: HttpRequest) -> str:
    """The address failures are counted against: the peer's, never a forwarded header."""
    return request.META.get("REMOTE_ADDR", "")


def _user_named(username: str | None):
    if not username:
        return None
    return get_user_model()._default_manager.filter(username=username).first()


def login_audit_record(*, action: str, username: str | None, address: str, **after) -> None:
    user = _user_named(username)
    AuditEntry.objects.create(
        actor=actor_now(),
        action=action,
        object_type="auth.user",
        object_id=str(user.pk) if user else "",
        object_repr=f"{username or '?'} from {address or '?'}"[:200],
        after={"username": username, "address": address, **after},
    )


def locked_out(sender, request=None, username=None, ip_address=None, **kwargs) -> None:
    from django.conf import settings

    # axes sends this again for every attempt made during the lockout: one row per
    # lockout (the failure that reached the limit), not one per attempt an attacker makes.
    if getattr(request, "axes_failures_since_start", None) != settings.AXES_FAILURE_LIMIT:
        return
    login_audit_record(action="login.locked_out", username=username, address=ip_address)


def attempt_deleted(sender, instance, **kwargs) -> None:
    from django.conf import settings

    if instance.failures_since_start < settings.AXES_FAILURE_LIMIT:
        return  # a count a good login reset, not a lockout
    login_audit_record(
        action="login.lockout_cleared",
        username=instance.username,
        address=instance.ip_address,
        failures=instance.failures_since_start,
    )


def connect() -> None:
    from axes.models import AccessAttempt
    from axes.signals import user_locked_out
    from django.db.models.signals import post_delete

    user_locked_out.connect(locked_out, dispatch_uid="portmon-audit-locked-out")
    post_delete.connect(attempt_deleted, sender=AccessAttempt, dispatch_uid="portmon-audit-unlock")
