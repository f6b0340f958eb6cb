"""Which events chain PoC checks: kinds and zones as configured, one run per (port, check)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from alerts.models import AlertEvent
from poc.chain import ChainPolicy, EventFacts, chain_plan
from poc.checks import checks_load
from poc.models import PocCheck, PocState
from poc.services.chain import pocs_chain
from scanner.models import Host, Network, Port

POLICY = ChainPolicy(kinds=frozenset({"new_port", "high_risk"}), zones=frozenset({"internal"}))


def facts(**kw) -> EventFacts:
    base = dict(event_id=1, host_id=1, proto="tcp", port=6379, kind="high_risk",
                zone="internal", suppressed=False, service="redis")  # fmt: skip
    return EventFacts(**{**base, **kw})


@pytest.mark.parametrize(
    "event, checks",
    [
        (facts(), ["redis_noauth"]),
        (facts(port=8080, service="http"), ["http_dir_listing"]),
        (facts(port=9200, service="http"), ["elasticsearch_open", "http_dir_listing"]),
        (facts(port=40000, service=""), []),  # unknown port, no name: nothing to prove
        (facts(zone="external"), []),
        (facts(kind="closed"), []),
        (facts(suppressed=True), []),
        (facts(proto="udp"), []),
    ],
)
def test_it_picks_the_checks_for_chained_events_only(event, checks):
    planned = chain_plan([event], policy=POLICY, checks=checks_load().values())
    assert sorted(p.check for p in planned) == checks


def test_it_plans_a_port_once_when_two_events_name_it():
    planned = chain_plan(
        [facts(event_id=1), facts(event_id=2, kind="new_port")],
        policy=POLICY,
        checks=checks_load().values(),
    )
    assert [(p.event_id, p.check) for p in planned] == [(1, "redis_noauth")]


@pytest.mark.django_db
def test_it_queues_once_per_port_and_check_while_pending_or_within_a_day():
    network = Network.objects.create(cidr="198.18.40.0/24", zone="internal")
    host = Host.objects.create(ip="198.18.40.5", network=network)
    Port.objects.create(host=host, port=6379, service="redis")
    first = AlertEvent.objects.create(host=host, port=6379, kind="high_risk")

    [queued] = pocs_chain(event_ids=[first.pk])
    assert PocCheck.objects.get(pk=queued).check_name == "redis_noauth"
    assert pocs_chain(event_ids=[first.pk]) == []  # pending

    PocCheck.objects.update(state=PocState.DONE, active_key=None, finished_at=timezone.now())
    again = AlertEvent.objects.create(host=host, port=6379, kind="service_changed")
    assert pocs_chain(event_ids=[again.pk]) == []  # ran within 24 h

    PocCheck.objects.update(finished_at=timezone.now() - timedelta(hours=25))
    assert len(pocs_chain(event_ids=[again.pk])) == 1
