"""Roles: viewer (read), triager (event states, notes), admin (rules, scope, policies,
agents, scan/PoC launches). Each includes the ones before it; a superuser is an admin.

The roles are Django groups of the same names (created by the data migration
dashboard/migrations/0001_roles.py, which reads ROLES from here), so
they are granted in the admin like any group.
"""

from functools import wraps

from django.contrib.auth.models import User
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

VIEWER, TRIAGER, ADMIN = "viewer", "triager", "admin"
ROLES = (VIEWER, TRIAGER, ADMIN)
RANK = {name: rank for rank, name in enumerate(ROLES, start=1)}


def role_groups_create(group_model) -> None:
    """The groups of the roles (a data migration passes its historical Group model)."""
    for name in ROLES:
        group_model.objects.get_or_create(name=name)


def role_groups_delete(group_model) -> None:
    group_model.objects.filter(name__in=ROLES).delete()


def role_rank(group_names, *, is_superuser: bool = False) -> int:
    """0 for no role; the highest rank among the groups otherwise (pure)."""
    if is_superuser:
        return RANK[ADMIN]
    return max((RANK.get(name, 0) for name in group_names), default=0)


def user_rank(user) -> int:
    if user is None or not user.is_authenticated or not user.is_active:
        return 0
    # Cached on the user object: a page asks several times (menu, buttons, the view).
    cached = getattr(user, "_portmon_rank", None)
    if cached is None:
        names = [] if user.is_superuser else list(user.groups.values_list("name", flat=True))
        cached = role_rank(names, is_superuser=user.is_superuser)
        user._portmon_rank = cached
    return cached


def has_role(user, role: str) -> bool:
    return user_rank(user) >= RANK[role]


class AuthenticatedRequest(HttpRequest):
    """The request a role_required view gets: its user is logged in (not anonymous)."""

    user: User


def role_required(role: str):
    """View decorator: anonymous -> the login page; logged in without the role -> 403."""

    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not has_role(request.user, role):
                raise PermissionDenied(f"this needs the {role} role")
            return view(request, *args, **kwargs)

        wrapped.required_role = role  # type: ignore[attr-defined]  # a function attribute
        return wrapped

    return decorator
