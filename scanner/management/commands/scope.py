"""manage.py scope add|exclude|remove|list: edit what Portmon may scan."""

from django.core.management.base import BaseCommand, CommandError

from scanner.models import Network, Zone
from scanner.scope import ScopeError
from scanner.services.scope import exclusion_add, network_add, network_remove


class Command(BaseCommand):
    help = "Manage the networks in scope and their exclusions."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser("add", help="add a network to scope")
        add.add_argument("cidr")
        add.add_argument("--zone", required=True, choices=Zone.values)
        add.add_argument("--owner", default="", help="email of the network's owner")
        add.add_argument("--description", default="")
        exclude = sub.add_parser("exclude", help="never scan this CIDR inside a network")
        exclude.add_argument("cidr")
        exclude.add_argument("--reason", default="")
        remove = sub.add_parser("remove", help="remove a network (and its exclusions)")
        remove.add_argument("cidr")
        sub.add_parser("list", help="list networks and exclusions")

    def handle(self, *args, action, **options):
        try:
            if action == "add":
                self._validate_email(options["owner"])
                net = network_add(
                    cidr=options["cidr"],
                    zone=options["zone"],
                    owner_email=options["owner"],
                    description=options["description"],
                )
                self.stdout.write(f"added {net.cidr} ({net.zone})")
            elif action == "exclude":
                ex = exclusion_add(cidr=options["cidr"], reason=options["reason"])
                self.stdout.write(f"excluded {ex.cidr} from {ex.network.cidr}")
            elif action == "remove":
                network_remove(cidr=options["cidr"])
                self.stdout.write(f"removed {options['cidr']}")
            else:
                self._list()
        except ScopeError as exc:
            raise CommandError(str(exc)) from None

    def _validate_email(self, email: str) -> None:
        if not email:
            return
        from django.core.exceptions import ValidationError
        from django.core.validators import validate_email

        try:
            validate_email(email)
        except ValidationError:
            raise ScopeError(f"{email!r} is not an email address") from None

    def _list(self) -> None:
        networks = Network.objects.prefetch_related("exclusions")
        if not networks:
            self.stdout.write("no networks in scope (manage.py scope add CIDR --zone internal)")
            return
        self.stdout.write(f"{'CIDR':<24} {'ZONE':<9} OWNER")
        for net in networks:
            self.stdout.write(f"{net.cidr:<24} {net.zone:<9} {net.owner_email or '-'}")
            for ex in net.exclusions.all():
                reason = f"  ({ex.reason})" if ex.reason else ""
                self.stdout.write(f"  excluding {ex.cidr}{reason}")
