"""Write services of the alerts app (diff, event triage, rules)."""
