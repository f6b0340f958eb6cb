"""Shared fixtures: real Celery worker processes against the test database."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Redis databases a server has by default (`databases 16` in redis.conf): 0-15.
REDIS_DATABASES = 16
# A worker's warm shutdown after SIGTERM (idle: ~1 s); past this it is killed, as systemd
# does after TimeoutStopSec. Short: a test that left a task hanging pays it at teardown.
STOP_GRACE_S = 10.0


# Tests with one of these marks start real processes (workers, servers, daemons, commands,
# a browser, a namespace lab); the fast gate (bin/test fast) runs all the others.
REAL_PROCESS_MARKS = ("lab", "celery", "browser", "process")

# The slow stage runs these under pytest-xdist with --dist loadgroup: the tests of one group run
# one after another on one xdist worker, everything else anywhere, at the same time.
# "lab": the network lab (nftables tables, namespaces, routes toward 198.18.0.0/15 and masscan
# rates measured for a machine that does nothing else). "loopback": the tests that listen on
# and scan 127.0.0.0/8 addresses (127.0.0.2-16, .30, .31, .120...: a sweep of one of them
# would find another test's listener on it). The other real-process tests use ephemeral
# ports on 127.0.0.1, their own tmp_path and test database, and the xdist worker's own test
# Redis database (worker_redis_url), so they share nothing.
LOOPBACK_SCAN_PATHS = (
    "tests/scanner/engines/",
    "tests/scanner/test_core_loop.py",
    "tests/scanner/test_pipeline.py",
    "tests/scanner/test_recall.py",
    "tests/scanner/test_scan_command.py",
    "tests/scanner/test_scan_import.py",
    "tests/scanner/test_scan_import_files.py",
    "tests/scanner/test_sweep_privileges.py",
    "tests/scanner/test_worker_shutdown.py",
    "tests/poc/",
)


def xdist_group_for(path: str, marks: set[str]) -> str | None:
    """The xdist_group of a real-process test (path relative to the repository), None for one
    that may run beside any other."""
    if "lab" in marks or path.startswith("tests/lab/"):
        return "lab"
    if marks & set(REAL_PROCESS_MARKS) and path.startswith(LOOPBACK_SCAN_PATHS):
        return "loopback"
    return None


def redis_url_for_worker(base: str, worker: str | None) -> str:
    """The test Redis URL of one xdist worker: base's database number plus the worker's index
    (gw0: base itself, gw1: the next database...), so parallel workers never flush each
    other's broker. Raises with the way out when the numbers run past Redis' 0-15."""
    if not worker or not worker.startswith("gw"):
        return base
    index = int(worker.removeprefix("gw"))
    parts = urlsplit(base)
    number = int(parts.path.strip("/") or 0) + index
    if number >= REDIS_DATABASES:
        raise RuntimeError(
            f"xdist worker {worker} needs Redis database {number} (PORTMON_TEST_REDIS_URL="
            f"{base} plus the worker's index {index}), past Redis' 0-{REDIS_DATABASES - 1}: run "
            "fewer workers (PORTMON_TEST_WORKERS) or lower PORTMON_TEST_REDIS_URL's number"
        )
    return urlunsplit(parts._replace(path=f"/{number}"))


def worker_redis_url() -> str:
    """This process's test Redis database: PORTMON_TEST_REDIS_URL (default database 14), one
    database further per xdist worker. Every celery_workers test flushes it."""
    base = os.environ.get("PORTMON_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
    return redis_url_for_worker(base, os.environ.get("PYTEST_XDIST_WORKER"))


DB_FIXTURES = {"db", "transactional_db", "django_db_reset_sequences", "live_server"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if "celery_workers" in fixtures:
            item.add_marker(pytest.mark.celery)
        group = xdist_group_for(
            Path(item.path).relative_to(ROOT).as_posix(), {m.name for m in item.iter_markers()}
        )
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
        # "db": what the SQLite pass of bin/test repeats (the rest does not depend on the engine).
        if item.get_closest_marker("django_db") or fixtures & DB_FIXTURES:
            item.add_marker(pytest.mark.db)


@pytest.fixture(autouse=True)
def no_processes_in_the_fast_gate(request, monkeypatch):
    """With PORTMON_TEST_NO_PROCESSES=1 (the fast gate), a test without a real-process mark
    that starts a process fails and says which mark it needs: the gate stays fast."""
    if os.environ.get("PORTMON_TEST_NO_PROCESSES") != "1" or any(
        request.node.get_closest_marker(mark) for mark in REAL_PROCESS_MARKS
    ):
        yield
        return
    started: list[str] = []
    real = subprocess.Popen._execute_child

    def refuse(self, args, *rest, **kwargs):
        started.append(str(args)[:200])
        raise RuntimeError(f"no processes in the fast gate: {args!r}")

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)
    yield
    monkeypatch.setattr(subprocess.Popen, "_execute_child", real)
    if started:
        pytest.fail(f"this test starts processes, mark it @pytest.mark.process: {started}")


@pytest.fixture(autouse=True, scope="session")
def fast_password_hasher():
    """Users made by the tests get a cheap hash: Django's PBKDF2 (1.2M rounds) costs over a
    second per password on a slow 2-core VM, and no test here is about password hashing.
    Processes the tests start (bin/run, workers) keep the product's hashers."""
    from django.test import override_settings

    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


@pytest.fixture(autouse=True, scope="session")
def overview_uncached():
    """The overview's counts are read afresh: a flushed test database gives its ids out
    again, so a cached count keyed on them could outlive the test that made it. The cache
    itself is tested with this turned back on (tests/dashboard/test_overview.py)."""
    from django.test import override_settings

    with override_settings(PORTMON_OVERVIEW_CACHE_SECONDS=0):
        yield


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

    def stop(self, name: str, grace: float = STOP_GRACE_S) -> int | None:
        """Stop a worker as systemd does (KillMode=mixed): SIGTERM to the main process, whose
        warm shutdown finishes the tasks in hand; whatever is left after `grace` seconds
        gets SIGKILL, the whole process group. The exit code, None when it had to be killed."""
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.kill(name)
                return None
        try:  # pool children or engines left behind (PR_SET_PDEATHSIG should have ended them)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return proc.returncode

    def stop_all(self) -> None:
        """All at once (SIGTERM to each, then wait): teardown costs the slowest, not the sum."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for name in self.procs:
            self.stop(name, grace=max(0.0, deadline - time.monotonic()))

    def start_beat(self, name: str = "beat", extra_env=None) -> subprocess.Popen:
        """Real `celery beat` with django-celery-beat's database scheduler (as bin/run)."""
        log = self.tmp_path / f"worker-{name}.log"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "portmon",
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                str(self.tmp_path / f"{name}-schedule"),
            ],  # fmt: skip
            cwd=ROOT,
            env={**self.env, **(extra_env or {})},
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[name] = proc
        return proc

    def pool_children(self, name: str) -> list[int]:
        """Pids of a worker's pool processes (what a crash or the OOM killer takes)."""
        with open(f"/proc/{self.procs[name].pid}/task/{self.procs[name].pid}/children") as fh:
            return [int(pid) for pid in fh.read().split()]


def _use_broker(app, monkeypatch, url: str, options: dict) -> None:
    # Celery reads CELERY_BROKER_URL from the environment before its own configuration.
    monkeypatch.setenv("CELERY_BROKER_URL", url)
    app.conf.broker_url = url
    app.conf.broker_transport_options = options
    reset_broker_connections(app)


@pytest.fixture(params=["redis"])
def celery_workers(request, tmp_path, transactional_db, settings, monkeypatch):
    """Real worker processes that share the test database, on Redis by default.

    Parametrize with indirect=["celery_workers"] and "filesystem" for the embedded
    broker (kombu's filesystem transport in a folder of the test). The test process
    itself publishes to the same broker.
    """
    from portmon.celery import app

    old_broker = app.conf.broker_url
    old_options = app.conf.broker_transport_options
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for_subprocess(),
        "PYTHONUNBUFFERED": "1",
    }
    if request.param == "filesystem":
        data_dir = tmp_path / "data"
        env.update({"CELERY_BROKER_URL": "filesystem://", "PORTMON_DATA_DIR": str(data_dir)})
        folders = {sub: data_dir / "broker" / sub for sub in ("queue", "processed", "control")}
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        _use_broker(app, monkeypatch, "filesystem://", {
            "data_folder_in": str(folders["queue"]), "data_folder_out": str(folders["queue"]),
            "processed_folder": str(folders["processed"]), "store_processed": False,
            "control_folder": str(folders["control"]),
        })  # fmt: skip
    else:
        redis_url = worker_redis_url()
        flush_redis(redis_url)
        env["CELERY_BROKER_URL"] = redis_url
        _use_broker(app, monkeypatch, redis_url, {"visibility_timeout": 30})
    workers = Workers(tmp_path, env)
    try:
        yield workers
    finally:
        workers.stop_all()
        app.conf.broker_url = old_broker
        app.conf.broker_transport_options = old_options
        reset_broker_connections(app)
        if request.param == "redis":
            flush_redis(worker_redis_url())


@pytest.fixture
def celery_eager(monkeypatch):
    """Tasks the code under test queues run at once in this process (as `scan --local`):
    for tests about the whole product path, with no worker in between."""
    from portmon.celery import app

    monkeypatch.setattr(app.conf, "task_always_eager", True)
    monkeypatch.setattr(app.conf, "task_eager_propagates", True)
