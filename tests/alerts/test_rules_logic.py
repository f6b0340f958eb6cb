"""Pure rule matching and precedence."""

from datetime import UTC, datetime, timedelta

import pytest

from alerts.rules import RuleError, RuleSpec, Subject, rule_spec_validate, rules_decide

NOW = datetime(2026, 6, 17, tzinfo=UTC)
WEB = Subject(ip="198.18.0.5", proto="tcp", port=8080, zone="internal")


def decide(*rules, subject=WEB):
    return rules_decide(rules, subject, at=NOW)


def test_it_lets_deny_beat_allow_whatever_the_order():
    allow = RuleSpec(id=1, action="allow", ip_cidr="198.18.0.0/24")
    deny = RuleSpec(id=2, action="deny", port_lo=8000, port_hi=8999)
    for rules in ((allow, deny), (deny, allow)):
        d = decide(*rules)
        assert (d.action, d.rule_id, d.immediate, d.suppressed) == ("deny", 2, True, False)


def test_it_credits_the_oldest_matching_rule():
    d = decide(RuleSpec(id=9, action="allow"), RuleSpec(id=4, action="allow", port_lo=8080))
    assert (d.action, d.rule_id, d.suppressed) == ("allow", 4, True)


def test_it_ignores_expired_and_disabled_rules():
    expired = RuleSpec(id=1, action="deny", expires_at=NOW - timedelta(seconds=1))
    disabled = RuleSpec(id=2, action="deny", enabled=False)
    later = RuleSpec(id=3, action="allow", expires_at=NOW + timedelta(days=1))
    d = decide(expired, disabled, later)
    assert (d.action, d.rule_id) == ("allow", 3)


@pytest.mark.parametrize(
    ("rule", "matches"),
    [
        (RuleSpec(id=1, action="allow"), True),
        (RuleSpec(id=1, action="allow", ip_cidr="198.18.0.5"), True),
        (RuleSpec(id=1, action="allow", ip_cidr="198.18.1.0/24"), False),
        (RuleSpec(id=1, action="allow", ip_cidr="2001:db8::/32"), False),
        (RuleSpec(id=1, action="allow", port_lo=8080), True),
        (RuleSpec(id=1, action="allow", port_lo=8081, port_hi=9000), False),
        (RuleSpec(id=1, action="allow", proto="udp"), False),
        (RuleSpec(id=1, action="allow", proto="tcp"), True),
        (RuleSpec(id=1, action="allow", zone="external"), False),
        (RuleSpec(id=1, action="allow", zone="internal"), True),
        # A process rule needs a process: scan results have none.
        (RuleSpec(id=1, action="allow", process="ossec-*"), False),
    ],
)
def test_it_matches_each_field(rule, matches):
    assert rule.matches(WEB) is matches


def test_it_matches_process_globs_for_agent_reports():
    ossec = RuleSpec(id=1, action="allow", process="ossec-*")
    agent = Subject(ip="198.18.0.5", proto="tcp", port=1514, process="ossec-csyslogd")
    nc = Subject(ip="198.18.0.5", proto="tcp", port=4444, process="nc")
    assert ossec.matches(agent) and not ossec.matches(nc)


def test_it_says_no_rule_matched():
    d = decide(RuleSpec(id=1, action="deny", port_lo=22))
    assert (d.action, d.rule_id, d.suppressed, d.immediate) == (None, None, False, False)


@pytest.mark.parametrize(
    "fields",
    [
        {"ip_cidr": "198.18.0.1/16"},
        {"ip_cidr": "not-an-ip"},
        {"port_lo": 0},
        {"port_lo": 100, "port_hi": 99},
        {"port_hi": 80},
        {"process": "/usr/bin/nc"},
    ],
)
def test_it_rejects_nonsense_rules(fields):
    with pytest.raises(RuleError):
        rule_spec_validate(**fields)
