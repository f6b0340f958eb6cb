"""Diff results, rules and notifications (see the diff/alerting issue)."""
