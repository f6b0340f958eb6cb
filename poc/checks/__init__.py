"""PoC checks: read-only proofs of an exposure, one module per family, found by registry."""

from poc.checks.base import (
    EVIDENCE_MAX,
    SEVERITIES,
    Check,
    CheckError,
    Conn,
    Target,
    Verdict,
    http_get,
)
from poc.checks.registry import check, check_get, checks_for, checks_load

__all__ = [
    "EVIDENCE_MAX",
    "SEVERITIES",
    "Check",
    "CheckError",
    "Conn",
    "Target",
    "Verdict",
    "check",
    "check_get",
    "checks_for",
    "checks_load",
    "http_get",
]
