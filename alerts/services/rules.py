"""Rule services: the dry run (which recent events would a draft rule have matched)."""

from datetime import datetime, timedelta

from django.utils import timezone

from alerts.models import AlertEvent
from alerts.rules import RuleSpec, Subject, rule_spec_validate

DRY_RUN_DAYS = 7


def rule_dry_run(
    *,
    action: str = "allow",
    ip_cidr: str = "",
    process: str = "",
    port_lo: int | None = None,
    port_hi: int | None = None,
    proto: str = "any",
    zone: str = "",
    now: datetime | None = None,
    days: int = DRY_RUN_DAYS,
) -> list[AlertEvent]:
    """Events of the last `days` days that a rule with these fields would match.

    Matched on the rule's own fields only (not precedence against other rules): the
    question is "what does this rule catch", not "what would change".
    """
    rule_spec_validate(ip_cidr=ip_cidr, port_lo=port_lo, port_hi=port_hi, process=process)
    now = now or timezone.now()
    spec = RuleSpec(
        id=None,
        action=action,
        ip_cidr=ip_cidr,
        process=process,
        port_lo=port_lo,
        port_hi=port_hi,
        proto=proto,
        zone=zone,
    )
    events = AlertEvent.objects.filter(
        created_at__gte=now - timedelta(days=days), created_at__lte=now
    ).select_related("host", "host__network")
    matched = []
    for event in events.order_by("-created_at", "-id"):
        detail = event.detail or {}
        net = event.host.network
        subject = Subject(
            ip=event.host.ip,
            proto=event.proto,
            port=event.port,
            zone=detail.get("zone") or (net.zone if net else ""),
            process=detail.get("process", ""),
        )
        if spec.matches(subject):
            matched.append(event)
    return matched
