"""The environment switches: each default works, each variable switches to the real thing."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Each test starts a Python process with its own environment.
pytestmark = pytest.mark.process

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import json, django
from django.conf import settings
django.setup()
db = settings.DATABASES["default"]
print(json.dumps({
    "engine": db["ENGINE"], "name": str(db["NAME"]), "options": db.get("OPTIONS", {}),
    "broker": settings.CELERY_BROKER_URL,
    "transport": getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}),
    "hard_limit": settings.PORTMON_SHARD_TIME_LIMIT,
    "acks_late": settings.CELERY_TASK_ACKS_LATE,
    "prefetch": settings.CELERY_WORKER_PREFETCH_MULTIPLIER,
    "email": settings.EMAIL_BACKEND, "secret": settings.SECRET_KEY, "debug": settings.DEBUG,
    "site_url": settings.SITE_URL,
}))
"""


def probe(tmp_path, **env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "CELERY_"))}
    for name in ("EMAIL_HOST", "SITE_URL", "PORTMON_BIND"):
        clean.pop(name, None)
    clean.update({"PORTMON_DATA_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "portmon.settings"})
    clean.update(env)
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=clean, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_it_defaults_to_sqlite_filesystem_broker_and_file_mail(tmp_path):
    s = probe(tmp_path)
    assert s["engine"] == "django.db.backends.sqlite3"
    assert s["name"].startswith(str(tmp_path))
    assert s["broker"] == "filesystem://"
    assert Path(s["transport"]["data_folder_in"]).is_dir()
    assert s["email"] == "django.core.mail.backends.filebased.EmailBackend"
    assert s["acks_late"] is True and s["prefetch"] == 1
    assert s["debug"] is False


def test_it_generates_the_secret_key_once_and_keeps_it_private(tmp_path):
    first = probe(tmp_path)["secret"]
    second = probe(tmp_path)["secret"]
    assert first == second and len(first) >= 50
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0
    assert probe(tmp_path, SECRET_KEY="x" * 60)["secret"] == "x" * 60


def test_it_switches_to_mariadb_with_utf8mb4(tmp_path):
    s = probe(tmp_path, DATABASE_URL="mysql://portmon:pw@127.0.0.1:3306/portmon")
    assert s["engine"] == "django.db.backends.mysql"
    assert s["name"] == "portmon"
    assert s["options"]["charset"] == "utf8mb4"


def test_it_keeps_the_mariadb_tls_options_of_the_url(tmp_path):
    """docs/deploy.md's TLS URL: the CA reaches mysqlclient beside the charset."""
    url = "mysql://portmon:pw@central.example.net:3306/portmon?ssl-ca=/etc/portmon/ca.pem"
    s = probe(tmp_path, DATABASE_URL=url)
    assert s["options"]["ssl"] == {"ca": "/etc/portmon/ca.pem"}
    assert s["options"]["charset"] == "utf8mb4"


def test_it_switches_to_redis_with_visibility_above_the_hard_limit(tmp_path):
    s = probe(tmp_path, CELERY_BROKER_URL="redis://127.0.0.1:6379/0")
    assert s["broker"] == "redis://127.0.0.1:6379/0"
    assert s["transport"]["visibility_timeout"] > s["hard_limit"]


def test_it_sends_mail_over_smtp_when_a_host_is_set(tmp_path):
    s = probe(tmp_path, EMAIL_HOST="127.0.0.1", EMAIL_PORT="2525")
    assert s["email"] == "django.core.mail.backends.smtp.EmailBackend"
    assert probe(tmp_path, EMAIL_BACKEND="console")["email"].endswith("console.EmailBackend")


def test_it_rejects_a_bad_boolean_with_a_clear_message(tmp_path):
    env = {**os.environ, "PORTMON_DATA_DIR": str(tmp_path), "DEBUG": "maybe"}
    out = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode != 0
    assert "DEBUG='maybe' is not a boolean" in out.stderr


def test_it_rejects_a_niceness_nmap_could_not_run_at(tmp_path):
    env = {**os.environ, "PORTMON_DATA_DIR": str(tmp_path), "PORTMON_NMAP_NICE": "-5"}
    out = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode != 0
    assert "PORTMON_NMAP_NICE='-5' must be between 0 and 19" in out.stderr


def test_it_passes_the_deployment_checks_in_production(tmp_path):
    env = {
        **os.environ,
        "PORTMON_DATA_DIR": str(tmp_path),
        "SECRET_KEY": "k3y-" + "aZ9_qW8-xE7.rT6!yU5@iO4#pA3$sD2%fG1^hJ0&kL" * 2,
        "PORTMON_HTTPS": "1",
        "ALLOWED_HOSTS": "portmon.example.com",
    }
    out = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "no issues" in out.stdout


def test_it_points_emailed_links_at_the_address_bin_run_binds(tmp_path):
    # Before: every link said :8000 whatever PORTMON_BIND was.
    assert probe(tmp_path)["site_url"] == "http://127.0.0.1:8000"
    assert probe(tmp_path, PORTMON_BIND="127.0.0.1:9090")["site_url"] == "http://127.0.0.1:9090"
    assert probe(tmp_path, PORTMON_BIND="scan.lan:80")["site_url"] == "http://scan.lan:80"
    assert probe(tmp_path, PORTMON_BIND="[::1]:8001")["site_url"] == "http://[::1]:8001"
    # A wildcard bind is no address to click: loopback with its port.
    assert probe(tmp_path, PORTMON_BIND="0.0.0.0:8443")["site_url"] == "http://127.0.0.1:8443"
    # SITE_URL wins (behind a proxy, TLS), even over a bind that is no HOST:PORT.
    assert (
        probe(tmp_path, PORTMON_BIND="unix:/run/portmon.sock", SITE_URL="https://pm.example/")[
            "site_url"
        ]
        == "https://pm.example"
    )


def test_it_stops_with_one_line_on_a_bind_that_names_no_port(tmp_path):
    for bind in ("127.0.0.1", "unix:/run/portmon.sock", "host:port"):
        clean = {k: v for k, v in os.environ.items() if k not in ("SITE_URL",)}
        clean.update(
            PORTMON_DATA_DIR=str(tmp_path),
            DJANGO_SETTINGS_MODULE="portmon.settings",
            PORTMON_BIND=bind,
        )
        out = subprocess.run(
            [sys.executable, "-c", PROBE], cwd=ROOT, env=clean, capture_output=True, text=True
        )
        assert out.returncode != 0
        assert "Traceback" not in out.stderr
        assert f"PORTMON_BIND={bind!r} is not HOST:PORT" in out.stderr
        assert "set SITE_URL" in out.stderr


def test_cache_keys_are_valid_for_every_backend_whatever_they_are_made_of():
    from datetime import UTC, datetime

    from django.core.cache.backends.base import memcache_key_warnings

    from portmon.cachekeys import cache_key

    parts = (datetime(2026, 12, 6, 22, 33, 32, tzinfo=UTC), None, "a b\nc", "x" * 400, 6)
    key = cache_key("scanner:exposure", *parts)
    assert list(memcache_key_warnings(key)) == []
    assert key != cache_key("scanner:exposure", *parts[:-1], 7)  # every part counts
    assert cache_key("p", "a:b", "c") != cache_key("p", "a", "b:c")  # parts stay apart
