"""API tokens in the admin: listed and revoked, never added or edited (a new token is shown
once, by the reissue action or `manage.py api_token create`)."""

from django.contrib import admin, messages

from accounts.models import ApiToken
from accounts.services import ApiTokenError, api_token_issue, api_token_revoke


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["key_id", "user", "name", "created_at", "expires_at", "last_used_at", "state"]
    list_filter = ["revoked_at"]
    search_fields = ["key_id", "user__username", "name"]
    list_select_related = ["user"]
    readonly_fields = ["key_id", "created_at", "expires_at", "revoked_at", "last_used_at"]
    exclude = ["token_hash"]
    actions = ["revoke_tokens", "reissue_tokens"]

    @admin.display(description="state")
    def state(self, token: ApiToken) -> str:
        return token.state()

    def has_add_permission(self, request) -> bool:
        return False  # issued by the action below or `manage.py api_token create`, shown once

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.action(description="Revoke tokens (they stop working at once)")
    def revoke_tokens(self, request, queryset):
        revoked = sum(api_token_revoke(token_id=token.pk) for token in queryset)
        self.message_user(request, f"{revoked} token(s) revoked.")

    @admin.action(description="Issue a new token for the same user (shown once)")
    def reissue_tokens(self, request, queryset):
        for token in queryset:
            try:
                issued = api_token_issue(user=token.user, name=token.name)
            except ApiTokenError as exc:
                self.message_user(request, str(exc), messages.ERROR)
                continue
            self.message_user(
                request,
                f"New token for {token.user} (copy it now, it is not stored): {issued.token}",
                messages.WARNING,
            )
