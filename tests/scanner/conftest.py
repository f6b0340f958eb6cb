"""Scanner test fixtures."""

import pytest


def _diff_now(sender, run_id: int, **kwargs) -> None:
    from alerts.services.diff import run_diff

    run_diff(run_id=run_id)


@pytest.fixture
def diff_on_finish(db):
    """Each finished run is diffed at once, in this process.

    Recording writes observations only; the port state moves when a run is diffed, which
    the product does in a worker after the scanner's transaction commits (these tests run
    in one transaction that never commits).
    """
    from scanner.signals import run_finished

    run_finished.connect(_diff_now, dispatch_uid="tests.scanner_diff_now")
    try:
        yield
    finally:
        run_finished.disconnect(dispatch_uid="tests.scanner_diff_now")
