"""The base class of tasks that hold a claim on work (a shard, a fingerprint batch, a PoC
run): when the hard time limit kills one, its work is handed on at once.

Celery acknowledges a task killed by its hard time limit (late acknowledgement does not
redeliver it) and then calls on_failure in the worker's main process. Without a hand-on
there the work would wait for a reaper to notice the stopped heartbeat.
"""

import inspect

from billiard.exceptions import TimeLimitExceeded
from celery import Task


class HandOnTask(Task):
    """Subclasses say how to hand their work on (hand_on); they get the task's arguments
    by name, whether it was sent with positional or keyword arguments."""

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        if isinstance(exc, TimeLimitExceeded):
            self.hand_on(
                task_id=task_id,
                arguments=self.arguments_of(args, kwargs),
                reason=f"killed by its hard time limit ({exc})",
            )
        super().on_failure(exc, task_id, args, kwargs, einfo)

    def arguments_of(self, args, kwargs) -> dict:
        """{parameter: value} of one call of this task, defaults included."""
        bound = inspect.signature(self.run).bind_partial(*(args or ()), **(kwargs or {}))
        bound.apply_defaults()
        return dict(bound.arguments)

    def hand_on(self, *, task_id: str, arguments: dict, reason: str) -> None:
        raise NotImplementedError(f"{type(self).__name__} must say how to hand its work on")
