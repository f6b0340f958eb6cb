"""A check that ignores its deadline (loaded in tests through PORTMON_POC_CHECK_MODULES)."""

import time

from poc.checks import Check, Target, Verdict, check


@check(name="test_hang", title="hangs", severity="low", ports=(1,))
def test_hang(spec: Check, target: Target) -> Verdict:
    sock = target.connect()  # held open: the kill must close it
    time.sleep(3600)
    sock.sock.close()
    return spec.verdict(False)
