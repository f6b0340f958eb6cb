"""Event kinds are defined once (alerts.kinds), each with its severity."""

import pytest

from agents import diff as agent_diff
from alerts.kinds import KIND_SEVERITY, EventKind, KindChoices, severity_for
from alerts.models import AlertEvent
from alerts.severity import Severity


def test_it_gives_every_kind_a_severity_and_only_poc_findings_their_own():
    assert {k for k in EventKind if k.severity is None} == {EventKind.POC_FINDING}
    assert set(KIND_SEVERITY) == set(EventKind.values) - {"poc_finding"}
    for kind in EventKind:
        expected = kind.severity if kind.severity is not None else Severity.MEDIUM
        assert severity_for(kind) == severity_for(kind.value) == expected


def test_it_stores_and_shows_the_same_kinds_everywhere():
    assert AlertEvent._meta.get_field("kind").choices == EventKind.choices
    assert EventKind.HIGH_RISK == "high_risk" and EventKind.HIGH_RISK.label == "high-risk port"
    assert {agent_diff.NEW_PROCESS, agent_diff.PROCESS_CHANGED} <= set(EventKind)


def test_it_refuses_a_kind_declared_without_a_severity():
    with pytest.raises(TypeError):

        class Forgotten(KindChoices):  # value and label only: the severity was forgotten
            NEW = "new_thing", "new thing"

    with pytest.raises(TypeError, match="severity must be a Severity"):

        class Misspelt(KindChoices):
            NEW = "new_thing", "high", "new thing"


def test_it_reads_a_poc_findings_severity_from_its_check_and_defaults_unknown_kinds():
    assert severity_for("poc_finding", {"severity": "Critical "}) == Severity.CRITICAL
    assert severity_for("poc_finding", {"severity": "bogus"}) == Severity.MEDIUM
    assert severity_for("not_a_kind") == Severity.MEDIUM
