"""Signals other apps listen to; the notify app subscribes to events_raised."""

from django.dispatch import Signal

# Sent after the transaction that created or reopened alert events committed (never for
# a rolled-back one). Arguments: event_ids (list of int), run_id (the scan run, or None
# for events that no run raised: host agents, PoC checks).
events_raised = Signal()

# Sent after a run's diff committed (not for a back-fill): its observations are part of the
# current state. Arguments: run_id. The PoC app verifies the run's exposures from it.
run_diffed = Signal()
