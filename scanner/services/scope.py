"""Write services for scope: networks and exclusions."""

import ipaddress

from django.db import models, transaction

from scanner.models import Exclusion, Network, Zone
from scanner.scope import (
    IPNetwork,
    Scope,
    ScopeError,
    find_overlap,
    normalise_network,
    parse_cidr,
    parse_network,
)
from scanner.targets import GuardedTargets, TargetError, guard, parse_targets


def _stored(cidr: str) -> IPNetwork:
    # Not parse_cidr: a row saved before a rule existed (an IPv4-mapped or NAT64 network)
    # must still be found, excluded from and removed, not make every command fail.
    return normalise_network(ipaddress.ip_network(cidr))


def _check_length(model: type[models.Model], field: str, value: str, label: str) -> None:
    """Refuse text longer than the column: MariaDB raises a DataError, SQLite keeps it all."""
    limit = model._meta.get_field(field).max_length
    if len(value) > limit:
        raise ScopeError(f"{label} is {len(value)} characters long; the limit is {limit}")


def network_add(*, cidr: str, zone: str, owner_email: str = "", description: str = "") -> Network:
    if zone not in Zone.values:
        raise ScopeError(f"zone must be one of {', '.join(Zone.values)}, not {zone!r}")
    _check_length(Network, "owner_email", owner_email, "owner")
    _check_length(Network, "description", description, "description")
    network = parse_cidr(cidr)
    with transaction.atomic():
        clash = find_overlap(network, Network.objects.values_list("cidr", flat=True))
        if clash:
            raise ScopeError(f"{network} overlaps network {clash} already in scope")
        return Network.objects.create(
            cidr=str(network), zone=zone, owner_email=owner_email, description=description
        )


def network_remove(*, cidr: str) -> None:
    network = parse_network(cidr)
    ids = [
        pk for pk, stored in Network.objects.values_list("pk", "cidr") if _stored(stored) == network
    ]
    deleted, _ = Network.objects.filter(pk__in=ids).delete()
    if not deleted:
        raise ScopeError(f"{network} is not in scope")


def exclusion_add(*, cidr: str, reason: str = "") -> Exclusion:
    _check_length(Exclusion, "reason", reason, "reason")
    excluded = parse_cidr(cidr)
    with transaction.atomic():
        parent = next(
            (
                n
                for n in Network.objects.all()
                if _stored(n.cidr).version == excluded.version
                and excluded.subnet_of(_stored(n.cidr))
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


def _no_resolve(name: str) -> list[str]:
    raise TargetError(f"{name!r}: stored targets must be addresses, not names")


def stored_targets_guard(targets_text: str) -> GuardedTargets:
    """A run's or shard's stored targets, checked against the scope as it is now.

    Workers check scope again before any engine: the scope may have changed since the
    run was planned.
    """
    return guard(parse_targets(targets_text, resolver=_no_resolve), scope_load())
