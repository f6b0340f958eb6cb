"""rsync daemon module listing (the list request: an empty module name)."""

from poc.checks.base import Check, CheckError, Target, Verdict
from poc.checks.registry import check

MODULES_SHOWN = 30


@check(
    name="rsync_modules",
    title="rsync daemon lists its modules",
    severity="medium",
    services=("rsync",),
    ports=(873,),
)
def rsync_modules(spec: Check, target: Target) -> Verdict:
    with target.connect() as conn:
        greeting = conn.read_until(b"\n")
        if not greeting.startswith(b"@RSYNCD: "):
            raise CheckError("not an rsync daemon")
        conn.send(b"@RSYNCD: 31.0\n\n")
        modules, error = [], b""
        while True:
            line = conn.read_until(b"\n").rstrip(b"\r\n")
            if line.startswith(b"@RSYNCD: EXIT"):
                break
            if line.startswith(b"@ERROR"):
                error = line
                break
            if line and not line.startswith(b"@RSYNCD: OK") and not line.startswith(b"@RSYNCD: "):
                modules.append(line.decode("utf-8", "replace"))
    if modules:
        shown = "\n".join(modules[:MODULES_SHOWN])
        return spec.verdict(True, f"{greeting.strip().decode()}\nmodules:\n{shown}")
    why = error.decode() or "no modules listed"
    return spec.verdict(False, f"{greeting.strip().decode()}\n{why}")
