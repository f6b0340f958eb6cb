"""Prometheus metrics of alerts and their notifications, read at each scrape (see
scanner.metrics)."""

from django.db.models import Count, Min
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily

from alerts.models import AlertEvent
from alerts.notify.models import Message


class AlertsCollector:
    def collect(self):
        events = GaugeMetricFamily(
            "portmon_events", "Alert events by state and kind", labels=["state", "kind"]
        )
        for state, kind, n in AlertEvent.objects.values_list("state", "kind").annotate(
            n=Count("id")
        ):
            events.add_metric([state, kind], n)
        yield events

        pending = Message.objects.filter(state="pending").aggregate(
            n=Count("id"), oldest=Min("created_at")
        )
        yield GaugeMetricFamily(
            "portmon_outbox_pending", "Notifications not sent yet", value=pending["n"]
        )
        age = (timezone.now() - pending["oldest"]).total_seconds() if pending["oldest"] else 0
        yield GaugeMetricFamily(
            "portmon_outbox_oldest_pending_age_seconds",
            "Age of the oldest unsent notification",
            value=age,
        )
