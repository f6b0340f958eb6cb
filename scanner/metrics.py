"""Prometheus metrics of the scanner, read from the database at each scrape.

A custom collector (registered on a private registry by the /metrics view, not on the
global one): every scrape reads the current state with a handful of aggregate queries, so
web processes need no shared counters and any of them answers the same.
"""

from django.db.models import Count, Max, Q, Sum
from prometheus_client.core import GaugeMetricFamily

from scanner.models import PortObservation, ScanPolicy, ScanRun, ScanShard


class ScannerCollector:
    def collect(self):
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

        last_ok = GaugeMetricFamily(
            "portmon_policy_last_success_timestamp_seconds",
            "When the last healthy finished run of each policy started",
            labels=["policy"],
        )
        healthy = Q(runs__state="finished", runs__degraded=False)
        for name, at in ScanPolicy.objects.annotate(
            ok=Max("runs__created_at", filter=healthy)
        ).values_list("name", "ok"):
            if at is not None:
                last_ok.add_metric([name], at.timestamp())
        yield last_ok
