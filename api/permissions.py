"""The roles (accounts.roles) for the API: reads need viewer; each view names the role its
writes need (`write_role`, or `action_roles` per action)."""

from rest_framework.permissions import SAFE_METHODS, BasePermission

from accounts.roles import ADMIN, VIEWER, has_role
from audit.context import current_actor


class RolePermission(BasePermission):
    def has_permission(self, request, view) -> bool:
        if not request.user or not request.user.is_authenticated:
            return False
        # Token users are known only now (inside the view): the audit log's actor.
        current_actor.set(request.user)
        roles = getattr(view, "action_roles", {})
        action = getattr(view, "action", None)
        if action in roles:
            return has_role(request.user, roles[action])
        if request.method in SAFE_METHODS:
            return has_role(request.user, VIEWER)
        return has_role(request.user, getattr(view, "write_role", ADMIN))
