"""nmap's service probe database with shorter waits on its first two probes (nmap --datadir).

nmap -sV first connects and listens (the NULL probe) for a banner for 6 s (nmap-service-
probes: `totalwaitms 6000`) before it sends any request; then it sends two empty lines
(GenericLines) and waits 5 s (nmap's default wait) for an answer. A service that waits for
the client (HTTP, redis, most on odd ports) costs the first wait before its name; one that
also ignores empty lines (redis) costs both. Measured on this machine, redis on a random
loopback port: 11.4 s with nmap's file, 8.2 s with a 2 s NULL wait, 5.1 s with 2 s on both.
In a scan these waits are the run's tail: the last port found is named that much later.

A banner that comes later than the NULL probe's wait is not lost: every later TCP probe
falls back to the NULL probe's match lines (nmap-service-probes, "fallback"), so it is
matched on the next probe's connection that waits long enough: GetRequest and the probes
after it keep nmap's 5 s. A shorter GenericLines wait loses only a service that answers
empty lines later than the wait and answers none of the later requests recognisably.

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
from collections.abc import Mapping
from pathlib import Path

NMAP_NULL_WAIT_MS = 6000  # nmap-service-probes: the TCP NULL probe's totalwaitms
NMAP_DEFAULT_WAIT_MS = 5000  # nmap's wait for a probe without a totalwaitms line
# The TCP probes whose wait may be shortened, with nmap's own wait for each.
NMAP_WAITS = {"NULL": NMAP_NULL_WAIT_MS, "GenericLines": NMAP_DEFAULT_WAIT_MS}
_TOTALWAIT = re.compile(r"^totalwaitms\s+\d+\s*$")
_lock = threading.Lock()
_WaitsKey = tuple[tuple[str, int], ...]  # (probe name, ms) pairs, sorted
_made: dict[_WaitsKey, Path | None] = {}  # per process; rewritten if the file went away


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


def with_waits(text: str, waits: Mapping[str, int]) -> str:
    """The probe file's text with each named TCP probe's totalwaitms set to its wait (a line
    added after the Probe line where the probe has none)."""
    unknown = set(waits) - set(NMAP_WAITS)
    if unknown:
        raise ValueError(f"no wait can be set for {', '.join(sorted(unknown))}")
    out: list[str] = []
    wait: int | None = None  # the wait to set in the probe being read, if any
    probe = ""
    done: set[str] = set()
    for line in text.splitlines():
        if line.startswith("Probe "):
            words = line.split()
            probe = words[2] if words[:2] == ["Probe", "TCP"] and len(words) > 2 else ""
            wait = waits.get(probe)
            out.append(line)
            if wait is not None and probe != "NULL":
                # Only NULL carries its own line in nmap's file; the others take nmap's default.
                out.append(f"totalwaitms {wait}")
                done.add(probe)
            continue
        if wait is not None and _TOTALWAIT.match(line):
            if probe in done:
                continue  # the line added above replaces it
            line = f"totalwaitms {wait}"
            done.add(probe)
        out.append(line)
    missing = set(waits) - done
    if missing:
        raise ValueError(f"no {', '.join(sorted(missing))} probe with a wait to set")
    return "\n".join(out) + "\n"


def datadir(waits: Mapping[str, int]) -> Path | None:
    """A private --datadir whose probe file has these waits (probe name -> ms); None when
    nmap's own file serves (no wait is shorter than nmap's, or the file cannot be read)."""
    shorter = {name: ms for name, ms in waits.items() if ms < NMAP_WAITS.get(name, ms + 1)}
    if not shorter:
        return None
    key = tuple(sorted(shorter.items()))
    with _lock:
        made = _made.get(key)
        if made is None or not (made / "nmap-service-probes").is_file():
            _made[key] = _write(shorter)
        return _made[key]


def _write(waits: Mapping[str, int]) -> Path | None:
    source = source_file()
    if source is None:
        return None
    try:
        text = with_waits(source.read_text(encoding="latin-1"), waits)
        base = _private_folder()
    except (OSError, ValueError):
        return None
    # One folder per content: every worker process shares it, and a new nmap's file (or
    # other waits) gets its own instead of changing one that an nmap run is reading.
    digest = hashlib.sha256(text.encode("latin-1")).hexdigest()[:16]
    folder = base / f"probes-{digest}"
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
