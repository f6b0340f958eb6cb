"""Shared fixtures: real Celery worker processes against the test database."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEST_REDIS_URL = os.environ.get("PORTMON_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")


def database_url_for_subprocess() -> str:
    """The URL of the database the tests use, for processes started by the tests."""
    from django.db import connection

    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    if connection.vendor == "mysql":
        auth = quote(s["USER"] or "root") + (":" + quote(s["PASSWORD"]) if s["PASSWORD"] else "")
        return f"mysql://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 3306}/{s['NAME']}"
    raise RuntimeError(f"no subprocess URL for {connection.vendor}")


def reset_broker_connections(app) -> None:
    """Drop pooled broker connections so the next publish uses the current broker_url."""
    from kombu import pools

    pools.reset()  # closes and forgets the pools kombu keeps per connection URL
    app._pool = None
    app.amqp._producer_pool = None


def flush_redis(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


class Workers:
    """Start and stop real `celery worker` processes; each in its own process group."""

    def __init__(self, tmp_path: Path, env: dict[str, str]):
        self.tmp_path = tmp_path
        self.env = env
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, queues: str, concurrency: int = 1, extra_env=None, as_user=()):
        """as_user: a command prefix (e.g. setpriv ...) that runs the worker as another user."""
        log = self.tmp_path / f"worker-{name}.log"
        env = {**self.env, **(extra_env or {})}
        proc = subprocess.Popen(
            [
                *as_user,
                sys.executable,
                "-m",
                "celery",
                "-A",
                "portmon",
                "worker",
                "--loglevel",
                "INFO",
                "--queues",
                queues,
                "--concurrency",
                str(concurrency),
                "--hostname",
                f"{name}@test",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],  # fmt: skip
            cwd=ROOT,
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[name] = proc
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if "ready." in log.read_text():
                return proc
            if proc.poll() is not None:
                raise RuntimeError(f"worker {name} exited:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        raise RuntimeError(f"worker {name} not ready in 60s:\n{log.read_text()[-3000:]}")

    def log(self, name: str) -> str:
        return (self.tmp_path / f"worker-{name}.log").read_text()

    def kill(self, name: str, sig=signal.SIGKILL) -> None:
        proc = self.procs[name]
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def stop_all(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is None:
                self.kill(name, signal.SIGTERM if False else signal.SIGKILL)


@pytest.fixture
def celery_workers(tmp_path, transactional_db, settings, monkeypatch):
    """Real worker processes on Redis that share the test database.

    The test process itself publishes to the same Redis database.
    """
    from portmon.celery import app

    # Celery reads CELERY_BROKER_URL from the environment before its own configuration.
    monkeypatch.setenv("CELERY_BROKER_URL", TEST_REDIS_URL)
    flush_redis(TEST_REDIS_URL)
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for_subprocess(),
        "CELERY_BROKER_URL": TEST_REDIS_URL,
        "PYTHONUNBUFFERED": "1",
    }
    old_broker = app.conf.broker_url
    old_options = app.conf.broker_transport_options
    app.conf.broker_url = TEST_REDIS_URL
    app.conf.broker_transport_options = {"visibility_timeout": 30}
    reset_broker_connections(app)
    workers = Workers(tmp_path, env)
    try:
        yield workers
    finally:
        workers.stop_all()
        app.conf.broker_url = old_broker
        app.conf.broker_transport_options = old_options
        reset_broker_connections(app)
        flush_redis(TEST_REDIS_URL)
