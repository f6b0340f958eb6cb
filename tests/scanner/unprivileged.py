"""Run a command as an unprivileged user with chosen capabilities (setpriv), as systemd does
for portmon-sweep@.service with User=portmon and AmbientCapabilities=CAP_NET_RAW."""

import os
import sys
from pathlib import Path

NOBODY = 65534  # Debian's nobody/nogroup: no file of the repo or the lab belongs to it

# The interpreter behind .venv may live under /root (pyenv), which nobody cannot traverse.
# In a private mount namespace of the command alone, /root becomes a 0755 tmpfs holding only
# that interpreter tree; the machine's /root is untouched. (deploy/install.sh builds the
# production venv from Debian's /usr/bin/python3 instead.)
_SHOW_INTERPRETER = """set -e
mount --bind "$1" "$2"
mount -t tmpfs -o mode=0755,size=1m portmon-test /root
mkdir -p "$1"
mount --bind "$2" "$1"
shift 2
exec "$@"
"""


def as_nobody(caps: str, stage: Path) -> list[str]:
    """Command prefix: uid/gid nobody with caps ("+net_raw" or "-all") kept across exec.

    stage: an empty directory (e.g. under tmp_path) for the interpreter bind mount.
    """
    setpriv = [
        "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
        f"--inh-caps={caps}", f"--ambient-caps={caps}", "--",
    ]  # fmt: skip
    real = Path(os.path.realpath(sys.executable))
    if real.parts[:2] != ("/", "root"):
        return setpriv
    tree = Path(*real.parts[:3])  # e.g. /root/.pyenv
    stage.mkdir(parents=True, exist_ok=True)
    return [
        "unshare", "--mount", "--propagation", "private", "--",
        "sh", "-c", _SHOW_INTERPRETER, "sh", str(tree), str(stage), *setpriv,
    ]  # fmt: skip
