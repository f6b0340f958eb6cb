"""Signals other apps listen to; the diff subscribes to run_finished."""

from django.dispatch import Signal

# Sent once per run, after its observations and the current port state are recorded.
# Arguments: run_id (int).
run_finished = Signal()
