"""Adapter: run one PoC check in a child process (poc.runner) under a hard timeout.

The check keeps its own deadline for each connect and read; the process is the backstop
for a check that does not (run_process: own process group, PR_SET_PDEATHSIG, the group
killed on timeout or on the Celery task's time limit), so no check outlives its limit and
no socket of it stays open.
"""

import ipaddress
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from poc.checks import Verdict, check_get
from scanner.engines.base import EngineError, check_number, run_process

ROOT = Path(__file__).resolve().parent.parent
# Python's start-up and the check modules' imports (~0.2 s here) on top of the check's own
# timeout, before the process is killed.
GRACE_S = 3.0


@dataclass(frozen=True)
class Outcome:
    """A verdict, or why there is none (the check could not decide: unknown, not negative)."""

    verdict: Verdict | None
    error: str = ""
    seconds: float = 0.0


def build_argv(*, check: str, ip: str, port: int, timeout: float) -> list[str]:
    """The runner's command line, from a registered check name and a parsed address."""
    check_get(check)  # KeyError for a name that is not registered
    address = ipaddress.ip_address(ip)
    check_number("port", port, 1, 65535, integer=True)
    check_number("timeout", timeout, 0.1, 3600)
    return [
        sys.executable,
        "-m",
        "poc.runner",
        "--",
        check,
        str(address),
        str(port),
        f"{timeout:g}",
    ]


def check_run(*, check: str, ip: str, port: int, timeout: float, grace: float = GRACE_S) -> Outcome:
    argv = build_argv(check=check, ip=ip, port=port, timeout=timeout)
    try:
        result = run_process(argv, timeout=timeout + grace, cwd=str(ROOT))
    except EngineError as exc:  # EngineTimeout included: the group is dead by now
        return Outcome(None, f"check stopped: {exc}")
    lines = result.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else {}
    except ValueError:
        answer = {}
    if not answer:
        last = (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[-1]
        return Outcome(None, f"check crashed: {last[:300]}", result.seconds)
    if not answer.get("ok"):
        return Outcome(None, str(answer.get("error", "no verdict"))[:300], result.seconds)
    verdict = Verdict(
        vulnerable=bool(answer["vulnerable"]),
        severity=answer["severity"],
        title=answer["title"],
        evidence=answer["evidence"],
    )
    return Outcome(verdict, "", result.seconds)
