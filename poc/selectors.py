"""Reads of PoC checks and their verdicts for the dashboard."""

from poc.models import PocCheck, PocResult, PocState

# Verdicts read for one host page (the latest per port and check are shown).
HOST_RESULTS = 200


def host_poc_results(*, host_id: int) -> list[dict]:
    """The host page's "PoC results" rows: checks queued or running now, then the latest
    verdict of each (port, check), vulnerable ones first. Flat dicts whose keys are the
    columns (the dashboard's slot contract, dashboard/slots.py)."""
    in_flight = PocCheck.objects.filter(
        host_id=host_id, state__in=(PocState.PENDING, PocState.RUNNING)
    ).order_by("proto", "port", "check_name")
    rows: list[dict[str, object]] = [
        {
            "port": f"{c.port}/{c.proto}",
            "check": c.check_name,
            "verdict": c.state,
            "severity": "",
            "title": "",
            "checked at": "",
            "evidence": "",
        }
        for c in in_flight
    ]
    latest: dict[tuple, PocResult] = {}
    for r in PocResult.objects.filter(host_id=host_id).order_by("-checked_at", "-id")[
        :HOST_RESULTS
    ]:
        latest.setdefault((r.proto, r.port, r.check_name), r)
    ordered = sorted(latest.values(), key=lambda r: (not r.vulnerable, r.port, r.check_name))
    rows += [
        {
            "port": f"{r.port}/{r.proto}",
            "check": r.check_name,
            "verdict": "vulnerable" if r.vulnerable else "not vulnerable",
            "severity": r.severity if r.vulnerable else "",
            "title": r.title,
            "checked at": r.checked_at,
            "evidence": r.evidence if len(r.evidence) <= 200 else r.evidence[:200] + "…",
        }
        for r in ordered
    ]
    return rows
