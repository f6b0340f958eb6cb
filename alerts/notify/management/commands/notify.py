"""manage.py notify: chat channels (list, add, remove) and `notify test CHANNEL`."""

import sys

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from alerts.notify import channels
from alerts.notify.chat import ChatError
from alerts.notify.models import ChatChannel


def _errors(exc: ValidationError) -> str:
    if hasattr(exc, "message_dict"):
        return "; ".join(m for messages in exc.message_dict.values() for m in messages)
    return "; ".join(exc.messages)


class Command(BaseCommand):
    help = "Chat channels: list, add, remove, and send a test message (notify test CHANNEL)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("list", help="the chat channels (URLs masked)")
        add = sub.add_parser("add", help="add a chat channel (the URL is checked)")
        add.add_argument("name", help="letters, digits, - and _")
        add.add_argument(
            "url", help="an Apprise URL, e.g. slack://TokenA/TokenB/TokenC; - reads it from stdin"
        )
        add.add_argument("--owner", default="", help="network owner email; default: every network")
        add.add_argument("--no-immediate", action="store_true", help="no immediate alerts")
        add.add_argument("--no-digest", action="store_true", help="no digest summary")
        remove = sub.add_parser("remove", help="delete a chat channel")
        remove.add_argument("name")
        test = sub.add_parser("test", help="send a test message now and say whether it arrived")
        test.add_argument("channel", help="a channel name, or an Apprise URL not saved yet")

    def handle(self, *args, action: str, **options):
        getattr(self, f"_{action}")(**options)

    def _list(self, **options):
        rows = list(ChatChannel.objects.order_by("name"))
        if not rows:
            self.stdout.write("no chat channels (add one: manage.py notify add NAME URL)")
        for c in rows:
            what = ", ".join(k for k in ("immediate", "digest") if getattr(c, k)) or "nothing"
            self.stdout.write(
                f"{c.name}  {c.service}  {c.url_masked}  "
                f"owner={c.owner_email or '(every network)'}  {what}"
                + ("" if c.enabled else "  DISABLED")
            )

    def _add(self, *, name, url, owner, no_immediate, no_digest, **options):
        if url == "-":  # keeps the token out of the shell history and the process list
            url = sys.stdin.readline().strip()
        try:
            channel = channels.chat_channel_create(
                name=name,
                url=url,
                owner_email=owner,
                immediate=not no_immediate,
                digest=not no_digest,
            )
        except ValidationError as exc:
            raise CommandError(f"channel not added: {_errors(exc)}") from None
        self.stdout.write(f"added {channel.name}: {channel.service} {channel.url_masked}")

    def _remove(self, *, name, **options):
        if not channels.chat_channel_delete(name=name):
            raise CommandError(f"no chat channel named {name!r}")
        self.stdout.write(f"removed {name}")

    def _test(self, *, channel, **options):
        if "://" in channel:
            target, label = None, "URL"
        else:
            target = ChatChannel.objects.filter(name=channel).first()
            if target is None:
                names = ", ".join(ChatChannel.objects.values_list("name", flat=True))
                raise CommandError(
                    f"no chat channel named {channel!r} (channels: {names or 'none'})"
                )
            label = f"channel {target.name}"
        try:
            checked = channels.chat_channel_test(
                channel=target, url=channel if target is None else ""
            )
        except ChatError as exc:
            raise CommandError(f"{label}: test message NOT sent: {exc}") from None
        self.stdout.write(
            f"{label} ({checked.service}, {checked.masked}): test message sent, "
            "the service accepted it"
        )
