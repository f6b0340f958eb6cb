"""Real daemons (and stand-ins) inside a lab namespace, for the PoC check tests."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT

START_TIMEOUT = 15.0


class Daemon:
    """One process started with `ip netns exec NS ...`, ready once IP:PORT accepts."""

    def __init__(self, namespace: str, argv: list[str], ip: str, port: int, log: Path):
        self.namespace, self.argv, self.ip, self.port, self.log = namespace, argv, ip, port, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Daemon":
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.namespace, *self.argv],
            stdin=subprocess.PIPE,  # stand-ins exit when it closes
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.argv[0]} exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection((self.ip, self.port), 0.5):
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.argv[0]} not listening on {self.ip}:{self.port}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def standin(kind: str, *, auth: bool = False) -> list[str]:
    return [sys.executable, "-m", "tests.poc.standins", kind] + (["--auth"] if auth else [])


def vsftpd_conf(path: Path, *, ip: str, anonymous: bool) -> Path:
    """A standalone vsftpd (no inetd, no systemd) on ip:21; anonymous login on or off."""
    root = path / "ftp-root"
    empty = path / "empty"
    for folder in (root, empty):
        folder.mkdir(exist_ok=True)
        folder.chmod(0o755)  # vsftpd refuses an anonymous root it could write to
    (root / "README").write_text("public files\n")
    conf = path / f"vsftpd-{'anon' if anonymous else 'closed'}.conf"
    conf.write_text(
        "\n".join(
            [
                "listen=YES",
                "listen_ipv6=NO",
                f"listen_address={ip}",
                "listen_port=21",
                "background=NO",
                f"anonymous_enable={'YES' if anonymous else 'NO'}",
                "local_enable=NO",
                "write_enable=NO",
                f"anon_root={root}",
                f"secure_chroot_dir={empty}",
                "seccomp_sandbox=NO",
                "pasv_enable=NO",
                "xferlog_enable=NO",
                "ftpd_banner=lab FTP",
            ]
        )  # fmt: skip
        + "\n"
    )
    conf.chmod(0o600)
    return conf


def rsyncd_conf(path: Path, *, listed: bool) -> Path:
    share = path / "share"
    share.mkdir(exist_ok=True)
    conf = path / f"rsyncd-{'listed' if listed else 'hidden'}.conf"
    conf.write_text(
        f"use chroot = no\npid file = {path}/rsyncd-{listed}.pid\n"
        f"[backups]\n path = {share}\n comment = nightly backups\n read only = yes\n"
        f" list = {'yes' if listed else 'no'}\n"
    )
    return conf
