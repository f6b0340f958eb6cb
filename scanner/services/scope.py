"""Write services for scope: networks and exclusions."""

import logging

from django.db import models, transaction

from scanner.models import Exclusion, Network, Zone
from scanner.scope import (
    IPNetwork,
    Scope,
    ScopeError,
    exclusion_check,
    network_check,
    parse_cidr,
    parse_network,
    stored_network,
    within,
)
from scanner.targets import GuardedTargets, TargetError, guard, parse_targets

logger = logging.getLogger(__name__)


def _check_length(model: type[models.Model], field: str, value: str, label: str) -> None:
    """Refuse text longer than the column: MariaDB raises a DataError, SQLite keeps it all."""
    column = model._meta.get_field(field)
    limit = column.max_length if isinstance(column, models.Field) else None
    if limit is not None and len(value) > limit:
        raise ScopeError(f"{label} is {len(value)} characters long; the limit is {limit}")


def network_add(*, cidr: str, zone: str, owner_email: str = "", description: str = "") -> Network:
    if zone not in Zone.values:
        raise ScopeError(f"zone must be one of {', '.join(Zone.values)}, not {zone!r}")
    _check_length(Network, "owner_email", owner_email, "owner")
    _check_length(Network, "description", description, "description")
    with transaction.atomic():
        network = network_check(cidr, existing=Network.objects.values_list("cidr", flat=True))
        return Network.objects.create(
            cidr=str(network), zone=zone, owner_email=owner_email, description=description
        )


def network_remove(*, cidr: str) -> None:
    """Remove a network (its exclusions go with it).

    Text that is no CIDR removes the network or exclusion stored with exactly that text:
    a garbage row must be removable by the same command that lists it.
    """
    try:
        network = parse_network(cidr)
    except ScopeError:
        text = cidr.strip()
        deleted = Network.objects.filter(cidr=text).delete()[0]
        deleted += Exclusion.objects.filter(cidr=text).delete()[0]
        if not deleted:
            raise
        return
    ids = [
        pk
        for pk, stored in Network.objects.values_list("pk", "cidr")
        if stored_network(stored) == network
    ]
    deleted, _ = Network.objects.filter(pk__in=ids).delete()
    if not deleted:
        raise ScopeError(f"{network} is not in scope")


def _parent_of(excluded: IPNetwork) -> Network | None:
    for candidate in Network.objects.all():
        net = stored_network(candidate.cidr)
        if net is not None and within(excluded, net):
            return candidate
    return None


def exclusion_add(*, cidr: str, reason: str = "") -> Exclusion:
    _check_length(Exclusion, "reason", reason, "reason")
    excluded = parse_cidr(cidr)
    with transaction.atomic():
        parent = _parent_of(excluded)
        if parent is None:
            raise ScopeError(f"{excluded} is not inside any network in scope; nothing to exclude")
        excluded = exclusion_check(
            cidr, parent=parent.cidr, existing=Exclusion.objects.values_list("cidr", flat=True)
        )
        return Exclusion.objects.create(network=parent, cidr=str(excluded), reason=reason)


def network_ids() -> dict[str, int]:
    """{str(network): Network id} for the rows that are networks (keyed as Scope keys them)."""
    ids = {}
    for pk, cidr in Network.objects.values_list("pk", "cidr"):
        network = stored_network(cidr)
        if network is not None:
            ids[str(network)] = pk
    return ids


def scope_load() -> Scope:
    """The current scope from the database (a selector; used at plan time and in workers).

    Every row is checked again (Scope.from_cidrs): one written by a path that skipped
    validation is left out and logged, never trusted, never a crash.
    """
    scope = Scope.from_cidrs(
        dict(Network.objects.values_list("cidr", "zone")),
        Exclusion.objects.values_list("cidr", flat=True),
    )
    for problem in scope.ignored:
        logger.error("scope: %s (remove it: manage.py scope remove CIDR)", problem)
    return scope


def _no_resolve(name: str) -> list[str]:
    raise TargetError(f"{name!r}: stored targets must be addresses, not names")


def stored_targets_guard(targets_text: str) -> GuardedTargets:
    """A run's or shard's stored targets, checked against the scope as it is now.

    Workers check scope again before any engine: the scope may have changed since the
    run was planned.
    """
    return guard(parse_targets(targets_text, resolver=_no_resolve), scope_load())
