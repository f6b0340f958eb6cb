"""Write services for scope: networks and exclusions."""

from django.db import transaction

from scanner.models import Exclusion, Network, Zone
from scanner.scope import Scope, ScopeError, find_overlap, parse_cidr


def network_add(*, cidr: str, zone: str, owner_email: str = "", description: str = "") -> Network:
    if zone not in Zone.values:
        raise ScopeError(f"zone must be one of {', '.join(Zone.values)}, not {zone!r}")
    network = parse_cidr(cidr)
    with transaction.atomic():
        clash = find_overlap(network, Network.objects.values_list("cidr", flat=True))
        if clash:
            raise ScopeError(f"{network} overlaps network {clash} already in scope")
        return Network.objects.create(
            cidr=str(network), zone=zone, owner_email=owner_email, description=description
        )


def network_remove(*, cidr: str) -> None:
    network = parse_cidr(cidr)
    deleted, _ = Network.objects.filter(cidr=str(network)).delete()
    if not deleted:
        raise ScopeError(f"{network} is not in scope")


def exclusion_add(*, cidr: str, reason: str = "") -> Exclusion:
    excluded = parse_cidr(cidr)
    with transaction.atomic():
        parent = next(
            (
                n
                for n in Network.objects.all()
                if parse_cidr(n.cidr).version == excluded.version
                and excluded.subnet_of(parse_cidr(n.cidr))
            ),
            None,
        )
        if parent is None:
            raise ScopeError(f"{excluded} is not inside any network in scope; nothing to exclude")
        clash = find_overlap(excluded, Exclusion.objects.values_list("cidr", flat=True))
        if clash:
            raise ScopeError(f"{excluded} overlaps exclusion {clash} already present")
        return Exclusion.objects.create(network=parent, cidr=str(excluded), reason=reason)


def scope_load() -> Scope:
    """The current scope from the database (a selector; used at plan time and in workers)."""
    return Scope.from_cidrs(
        dict(Network.objects.values_list("cidr", "zone")),
        Exclusion.objects.values_list("cidr", flat=True),
    )
