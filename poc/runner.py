"""`python -m poc.runner -- CHECK IP PORT TIMEOUT`: one check in a process of its own.

Prints one JSON line: {"ok": true, "vulnerable", "severity", "title", "evidence"} or
{"ok": false, "error"}. A process, so that a check which hangs past its own deadline (a
bug, a blocking call) is killed with every socket it opened (poc.engine).
"""

import json
import sys
from dataclasses import asdict

from poc.checks import CheckError, Target, check_get


def main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if len(argv) != 4:
        print(json.dumps({"ok": False, "error": "usage: poc.runner -- CHECK IP PORT TIMEOUT"}))
        return 2
    name, ip, port, timeout = argv
    try:
        check = check_get(name)
        target = Target(ip=ip, port=int(port), timeout=float(timeout))
        verdict = check.run(check, target)
    except (CheckError, KeyError, ValueError) as exc:
        print(json.dumps({"ok": False, "error": str(exc).strip("'\"")}))
        return 0
    print(json.dumps({"ok": True, **asdict(verdict)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
