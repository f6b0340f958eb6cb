"""Anonymous FTP login (USER anonymous; nothing is listed, read or written)."""

import re

from poc.checks.base import Check, CheckError, Conn, Target, Verdict
from poc.checks.registry import check

# A multi-line reply ("220-...") is long only if the server is chatty; cap it.
REPLY_MAX = 8192


def ftp_reply(conn: Conn) -> tuple[int, bytes]:
    """One reply, multi-line ("220-...", then "220 ...") included: (code, text)."""
    first = conn.read_until(b"\n")
    if not re.match(rb"\d{3}[ -]", first):
        raise CheckError("not an FTP answer")
    text, line = first, first
    if first[3:4] == b"-":
        while not line.startswith(first[:3] + b" "):
            line = conn.read_until(b"\n")
            text += line
            if len(text) > REPLY_MAX:
                raise CheckError("FTP reply too long")
    return int(first[:3]), text.strip()


@check(
    name="ftp_anonymous",
    title="FTP server accepts anonymous login",
    severity="medium",
    services=("ftp",),
    ports=(21,),
)
def ftp_anonymous(spec: Check, target: Target) -> Verdict:
    with target.connect() as conn:
        code, banner = ftp_reply(conn)
        if code != 220:
            return spec.verdict(False, banner)
        conn.send(b"USER anonymous\r\n")
        code, user = ftp_reply(conn)
        if code == 331:
            conn.send(b"PASS portmon@example.com\r\n")
            code, login = ftp_reply(conn)
        else:
            login = user
        if code == 230:
            conn.send(b"QUIT\r\n")
        steps = [banner, b"> USER anonymous", user]
        if login is not user:
            steps += [b"> PASS (an e-mail address)", login]
    evidence = b"\n".join(steps)
    return spec.verdict(code == 230, evidence)
