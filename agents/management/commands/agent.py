"""manage.py agent add|revoke|rotate|list: enrol host agents and manage their tokens."""

import sys

from django.core.management.base import BaseCommand, CommandError, CommandParser

from agents.models import Agent
from agents.services.enrollment import EnrollmentError, agent_add, agent_revoke, agent_rotate


class Command(BaseCommand):
    help = "Enrol host agents; tokens are printed once and stored hashed."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser("add", help="a new agent for a host (its IPv4 and IPv6 addresses)")
        add.add_argument("name")
        add.add_argument("--host", action="append", required=True, dest="ips", metavar="IP")
        for name, text in (("revoke", "stop the agent's token"), ("rotate", "a new token")):
            sub.add_parser(name, help=text).add_argument("name")
        sub.add_parser("list", help="agents, addresses, last report")

    def handle(self, *args, action: str, **options) -> None:
        if action == "list":
            return self._list()
        if action == "add":
            try:
                issued = agent_add(name=options["name"], ips=options["ips"])
            except EnrollmentError as exc:
                raise CommandError(str(exc)) from None
        else:
            agent = Agent.objects.filter(name=options["name"]).first()
            if agent is None:
                raise CommandError(f"no agent named {options['name']!r}")
            if action == "revoke":
                done = agent_revoke(agent_id=agent.pk)
                self.stdout.write(f"{agent.name}: {'revoked' if done else 'already revoked'}")
                return
            issued = agent_rotate(agent_id=agent.pk)
        # The token on stdout alone (for `> token-file`), the advice on stderr.
        self.stdout.write(issued.token)
        self.stderr.write(
            f"token for agent {issued.name}: shown once, store it in the agent's token file"
        )

    def _list(self) -> None:
        agents = Agent.objects.prefetch_related("addresses__host")
        for agent in agents:
            ips = ",".join(link.host.ip for link in agent.addresses.all())
            state = "enabled" if agent.enabled else "revoked"
            last = agent.last_report_at.isoformat() if agent.last_report_at else "never"
            self.stdout.write(f"{agent.name}\t{ips}\t{state}\tlast report {last}")

    def run_from_argv(self, argv: list[str]) -> None:
        # A wrong option is a one-line error and exit 1, as in the other commands.
        try:
            super().run_from_argv(argv)
        except SystemExit as exc:
            if exc.code == 2:
                sys.exit(1)
            raise
