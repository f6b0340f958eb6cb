"""manage.py api_token create|list|revoke: API tokens, stored hashed, shown once."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from accounts.models import ApiToken
from accounts.services import ApiTokenError, api_token_issue, api_token_revoke


class Command(BaseCommand):
    help = "Issue, list and revoke API tokens (Authorization: Token <token>)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="issue a token for a user; printed once")
        create.add_argument("username")
        create.add_argument("--name", default="", help="what will use it")
        create.add_argument(
            "--days",
            type=int,
            default=None,
            help="days until it expires (default PORTMON_API_TOKEN_DAYS; 0: never)",
        )
        sub.add_parser("list", help="list tokens (never their secrets)")
        revoke = sub.add_parser("revoke", help="revoke a token by its key id (or row id)")
        revoke.add_argument("token")

    def handle(self, *args, action, **options):
        if action == "create":
            self._create(options["username"], options["name"], options["days"])
        elif action == "revoke":
            self._revoke(options["token"])
        else:
            self._list()

    def _create(self, username: str, name: str, days: int | None) -> None:
        user = get_user_model()._default_manager.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user {username!r}")
        try:
            issued = api_token_issue(user=user, name=name, days=days)
        except ApiTokenError as exc:
            raise CommandError(str(exc)) from None
        until = f"{issued.expires_at:%Y-%m-%d %H:%M} UTC" if issued.expires_at else "never"
        self.stderr.write(
            f"token for {username} (expires: {until}); copy it now, it is not stored:"
        )
        self.stdout.write(issued.token)

    def _revoke(self, ref: str) -> None:
        token = ApiToken.objects.filter(key_id=ref).first()
        if token is None and ref.isdigit():
            token = ApiToken.objects.filter(pk=int(ref)).first()
        if token is None:
            raise CommandError(f"no token {ref!r} (see: manage.py api_token list)")
        if not api_token_revoke(token_id=token.pk):
            raise CommandError(f"token {token.key_id} was revoked already")
        self.stdout.write(f"revoked {token.key_id} of {token.user}")

    def _list(self) -> None:
        now = timezone.now()
        tokens = ApiToken.objects.select_related("user")
        self.stdout.write(f"{'KEY ID':<24} {'USER':<16} {'STATE':<8} {'EXPIRES':<17} NAME")
        for t in tokens:
            expires = f"{t.expires_at:%Y-%m-%d %H:%M}" if t.expires_at else "never"
            self.stdout.write(
                f"{t.key_id:<24} {t.user.username:<16} {t.state(now):<8} {expires:<17} {t.name}"
            )
