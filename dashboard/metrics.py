"""/metrics in Prometheus text format, read from the database at each scrape.

A custom collector on a private registry (not the global one): every scrape reads the
current state with a handful of aggregate queries, so web processes need no shared
counters and any of them answers the same.
"""

from django.db.models import Count, Max, Min, Q, Sum
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from alerts.models import AlertEvent
from scanner.models import PortObservation, ScanPolicy, ScanRun, ScanShard


class PortmonCollector:
    def collect(self):
        now = timezone.now()
        runs = GaugeMetricFamily("portmon_runs", "Scan runs by state", labels=["state"])
        for state, n in ScanRun.objects.values_list("state").annotate(n=Count("id")):
            runs.add_metric([state], n)
        yield runs

        shards = GaugeMetricFamily("portmon_shards", "Shards by state", labels=["state"])
        attempts = GaugeMetricFamily(
            "portmon_shard_attempts", "Attempts summed over shards, by state", labels=["state"]
        )
        for state, n, tries in ScanShard.objects.values_list("state").annotate(
            n=Count("id"), tries=Sum("attempts")
        ):
            shards.add_metric([state], n)
            attempts.add_metric([state], tries or 0)
        yield shards
        yield attempts

        backlog = PortObservation.objects.filter(
            fingerprinted=False,
            run__fingerprint=True,
            run__state__in=["sweeping", "fingerprinting"],
        ).count()
        yield GaugeMetricFamily(
            "portmon_fingerprint_backlog",
            "Open ports of active runs not fingerprinted yet",
            value=backlog,
        )

        events = GaugeMetricFamily(
            "portmon_events", "Alert events by state and kind", labels=["state", "kind"]
        )
        for state, kind, n in AlertEvent.objects.values_list("state", "kind").annotate(
            n=Count("id")
        ):
            events.add_metric([state, kind], n)
        yield events

        yield from self._outbox(now)

        last_ok = GaugeMetricFamily(
            "portmon_policy_last_success_timestamp_seconds",
            "When the last healthy finished run of each policy started",
            labels=["policy"],
        )
        for name, at in ScanPolicy.objects.annotate(
            ok=Max("runs__created_at", filter=_healthy())
        ).values_list("name", "ok"):
            if at is not None:
                last_ok.add_metric([name], at.timestamp())
        yield last_ok

    def _outbox(self, now):
        from alerts.notify.models import Message

        pending = Message.objects.filter(state="pending").aggregate(
            n=Count("id"), oldest=Min("created_at")
        )
        yield GaugeMetricFamily(
            "portmon_outbox_pending", "Notifications not sent yet", value=pending["n"]
        )
        age = (now - pending["oldest"]).total_seconds() if pending["oldest"] else 0
        yield GaugeMetricFamily(
            "portmon_outbox_oldest_pending_age_seconds",
            "Age of the oldest unsent notification",
            value=age,
        )


def _healthy():
    return Q(runs__state="finished", runs__degraded=False)


def metrics_text() -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PortmonCollector())
    return generate_latest(registry)
