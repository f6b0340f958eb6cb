"""nmap's service probe database with a shorter wait on the NULL probe (nmap --datadir).

nmap -sV first connects and listens (the NULL probe) for a banner for 6 s (nmap-service-
probes: `totalwaitms 6000`) before it sends any request. A service that waits for the
client (HTTP, redis, most on odd ports) costs those 6 s before its name; measured on this
machine, redis on a random loopback port: 11.4 s with nmap's file, 7.3 s with a 2 s NULL
wait. In a scan that wait is the run's tail: the last port found is named that much later.

A banner that comes later than the NULL probe's wait is not lost: every later TCP probe
falls back to the NULL probe's match lines (nmap-service-probes, "fallback"), so it is
matched on the next probe's connection if it comes within that probe's 5 s.

nmap looks for each data file in --datadir first and then in its usual places, so the
directory holds only this one file; nmap-services, scripts and the rest are nmap's own.
"""

import contextlib
import hashlib
import os
import re
import shutil
import stat
import tempfile
import threading
from pathlib import Path

NMAP_NULL_WAIT_MS = 6000
_TOTALWAIT = re.compile(r"^totalwaitms\s+\d+\s*$")
_lock = threading.Lock()
_made: dict[int, Path | None] = {}  # per process; rewritten if the file went away


def source_file() -> Path | None:
    """nmap's own nmap-service-probes, where nmap itself would look; None if not found."""
    candidates = []
    if os.environ.get("NMAPDIR"):
        candidates.append(Path(os.environ["NMAPDIR"]))
    binary = shutil.which("nmap")
    if binary:
        candidates.append(Path(binary).resolve().parent.parent / "share" / "nmap")
    candidates += [Path("/usr/share/nmap"), Path("/usr/local/share/nmap")]
    for folder in candidates:
        path = folder / "nmap-service-probes"
        if path.is_file():
            return path
    return None


def with_null_wait(text: str, wait_ms: int) -> str:
    """The probe file's text with the TCP NULL probe's totalwaitms set to wait_ms."""
    out, in_null, done = [], False, False
    for line in text.splitlines():
        if line.startswith("Probe "):
            in_null = line.split()[:3] == ["Probe", "TCP", "NULL"]
        if in_null and _TOTALWAIT.match(line):
            line, done = f"totalwaitms {wait_ms}", True
        out.append(line)
    if not done:
        raise ValueError("no `totalwaitms` line in the TCP NULL probe")
    return "\n".join(out) + "\n"


def datadir(null_wait_ms: int) -> Path | None:
    """A private --datadir whose probe file waits null_wait_ms for banners; None when nmap's
    own file serves (the wait asked is nmap's, or the file cannot be found or read)."""
    if null_wait_ms >= NMAP_NULL_WAIT_MS:
        return None
    with _lock:
        made = _made.get(null_wait_ms)
        if made is None or not (made / "nmap-service-probes").is_file():
            _made[null_wait_ms] = _write(null_wait_ms)
        return _made[null_wait_ms]


def _write(null_wait_ms: int) -> Path | None:
    source = source_file()
    if source is None:
        return None
    try:
        text = with_null_wait(source.read_text(encoding="latin-1"), null_wait_ms)
        base = _private_folder()
    except (OSError, ValueError):
        return None
    # One folder per content: every worker process shares it, and a new nmap's file (or
    # another wait) gets its own instead of changing one that an nmap run is reading.
    digest = hashlib.sha256(text.encode("latin-1")).hexdigest()[:16]
    folder = base / f"null{null_wait_ms}-{digest}"
    target = folder / "nmap-service-probes"
    if not target.is_file():
        folder.mkdir(mode=0o700, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", encoding="latin-1", dir=folder, delete=False, prefix=".probes-"
        ) as tmp:
            tmp.write(text)
        os.replace(tmp.name, target)
    return folder


def _private_folder() -> Path:
    """This user's folder under the temporary directory, refused unless it is a real folder
    that only this user can write to (nmap reads what is in it)."""
    base = Path(tempfile.gettempdir()) / f"portmon-nmap-data-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        base.mkdir(mode=0o700)
    info = base.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise OSError(f"{base} is not a private folder of this user")
    return base
