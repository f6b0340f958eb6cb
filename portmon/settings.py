"""Portmon settings: everything comes from the environment, with laptop-friendly defaults.

DATABASE_URL       default SQLite in var/; mysql://user:pass@host/db for MariaDB/MySQL
CELERY_BROKER_URL  default kombu's filesystem transport in var/broker (no server needed)
EMAIL_HOST         unset: mail is written to files in var/mail; set: SMTP
SECRET_KEY         unset: generated once into var/secret_key (never committed)
"""

import re
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
from kombu import Exchange, Queue

from portmon.env import SettingError, env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
PORTMON_DATA_DIR = Path(env_str("PORTMON_DATA_DIR", str(BASE_DIR / "var")))
PORTMON_DATA_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)  # new: this user only


def _secret_key() -> str:
    key = env_str("SECRET_KEY")
    if key:
        return key
    path = PORTMON_DATA_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")


def _site_url_default(bind: str) -> str:
    """The dashboard's own address from PORTMON_BIND (what bin/run serves on): emailed links
    must reach the web server wherever it listens. A wildcard bind (0.0.0.0, [::]) says
    nothing a reader can use, so the links name this machine's loopback; set SITE_URL."""
    host, _, port = (bind.strip() or "127.0.0.1:8000").rpartition(":")
    if not host or not port.isdigit() or host.startswith("unix"):
        raise SettingError(
            f"PORTMON_BIND={bind!r} is not HOST:PORT (e.g. 127.0.0.1:8000): set SITE_URL "
            "to the address people open, the links in alerts use it"
        )
    if host in ("0.0.0.0", "[::]", "*", ""):
        host = "127.0.0.1"
    return f"http://{host}:{port}"


# Links in mail and chat messages. Unset: from PORTMON_BIND (bin/run's listen address).
SITE_URL = (env_str("SITE_URL") or _site_url_default(env_str("PORTMON_BIND"))).rstrip("/")

# Behind TLS (PORTMON_HTTPS=1) the deployment checks all pass.
PORTMON_HTTPS = env_bool("PORTMON_HTTPS", False)
SECURE_SSL_REDIRECT = PORTMON_HTTPS
SESSION_COOKIE_SECURE = PORTMON_HTTPS
CSRF_COOKIE_SECURE = PORTMON_HTTPS
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000 if PORTMON_HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = PORTMON_HTTPS
SECURE_HSTS_PRELOAD = PORTMON_HTTPS
if env_bool("PORTMON_BEHIND_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "scanner",
    "alerts",
    "alerts.notify",
    "agents",
    "accounts",
    "dashboard",
    "poc",
    "audit",
    "axes",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "api",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "portmon.csp.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "audit.context.AuditActorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last: turns a request that hit a login lockout into its 429 answer.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "portmon.urls"
WSGI_APPLICATION = "portmon.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
            # |when (dates with the zone), |has_role, {% mail_destination %} on every page.
            "builtins": ["dashboard.templatetags.portmon"],
        },
    },
    {
        # Emails and chat messages (alerts/notify/jinja2/notify/): Jinja2, HTML autoescaped,
        # text not; django.template.engines["email"].
        "NAME": "email",
        "BACKEND": "django.template.backends.jinja2.Jinja2",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {"environment": "alerts.notify.templating.environment"},
    },
]

# --- Database ---------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{PORTMON_DATA_DIR / 'portmon.sqlite3'}")
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
_db = DATABASES["default"]
if _db["ENGINE"] == "django.db.backends.mysql":
    # Merged, not replaced: DATABASE_URL may carry TLS options (?ssl-ca=...).
    _db.setdefault("OPTIONS", {}).update(
        {"charset": "utf8mb4", "init_command": "SET sql_mode='STRICT_TRANS_TABLES'"}
    )
    _db["TEST"] = {"CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"}
elif _db["ENGINE"] == "django.db.backends.sqlite3":
    _db["CONN_MAX_AGE"] = 0
    # Web, worker and beat share one file: wait for locks instead of failing,
    # take the write lock up front, and let readers run beside the writer (WAL).
    _db["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not :memory:, so that worker processes started by tests see the test data.
    _db["TEST"] = {"NAME": str(PORTMON_DATA_DIR / "test_portmon.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# --- Login throttling (django-axes) -------------------------------------------------
# Failed logins are counted per (user name, address): at PORTMON_LOGIN_FAILURES the pair is
# locked out (429) for PORTMON_LOGIN_LOCKOUT_MINUTES (0: until an admin unlocks it in the
# admin's "Access attempts" or with `manage.py axes_reset`). Bad API tokens count the same
# way, per address (api.authentication).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out pair before a check
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("PORTMON_LOGIN_FAILURES", 5, lo=1)
_lockout_minutes = env_int("PORTMON_LOGIN_LOCKOUT_MINUTES", 30, lo=0)
AXES_COOLOFF_TIME = timedelta(minutes=_lockout_minutes) if _lockout_minutes else None
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_HTTP_RESPONSE_CODE = 429
AXES_VERBOSE = False  # no banner on every command
# REMOTE_ADDR, not X-Forwarded-For: a header any client can write would let it pick the
# address its failures are counted against.
AXES_CLIENT_IP_CALLABLE = "audit.logins.client_address"


LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:home"
LOGOUT_REDIRECT_URL = "login"

# --- REST API (api/) ------------------------------------------------------------
# Tokens for services (Authorization: Token ...), the session for the browser; the same
# roles as the dashboard (api.permissions).
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "api.authentication.LockoutTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["api.permissions.RolePermission"],
    "DEFAULT_PAGINATION_CLASS": "api.pagination.StrictPageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
}
# API tokens expire after this many days unless issued with another (`--days 0`: never).
PORTMON_API_TOKEN_DAYS = env_int("PORTMON_API_TOKEN_DAYS", 365, lo=0)
SPECTACULAR_SETTINGS = {
    "TITLE": "Portmon API",
    "DESCRIPTION": "Hosts, ports, alert events, rules, networks, scan policies and runs.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI from the installed sidecar package, not a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # The 4xx answers each operation gives (api.schema).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "api.schema.error_responses",
    ],
    # Several models have a "state": one named enum each in the schema.
    "ENUM_NAME_OVERRIDES": {
        "EventStateEnum": "alerts.models.EventState",
        "RunStateEnum": "scanner.models.RunState",
        "ShardStateEnum": "scanner.models.ShardState",
        "PortStateEnum": "scanner.models.PortState",
        "ScanProtoEnum": "scanner.models.Proto",
    },
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True
# DATETIME_FORMAT and friends: "2026-12-06 18:42 UTC" everywhere (portmon/formats/en).
FORMAT_MODULE_PATH = ["portmon.formats"]

STATIC_URL = "static/"
STATIC_ROOT = PORTMON_DATA_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- Email ------------------------------------------------------------------
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "portmon@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
EMAIL_HOST = env_str("EMAIL_HOST")
if EMAIL_HOST:
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_PORT = env_int("EMAIL_PORT", 25)
    EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
    EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
    EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
    EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
    EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 30)
elif env_str("EMAIL_BACKEND") == "console":
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
else:
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    EMAIL_FILE_PATH = PORTMON_DATA_DIR / "mail"

# --- Celery -----------------------------------------------------------------
# Unset: kombu's filesystem transport, so a real worker runs with no broker server.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
BROKER_DIR = PORTMON_DATA_DIR / "broker"
if CELERY_BROKER_URL.startswith("filesystem://"):
    for sub in ("queue", "processed", "control"):
        (BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "store_processed": False,
        "control_folder": str(BROKER_DIR / "control"),
    }

# A shard may run for a long time; these limits are the contract that keeps it visible.
# The sweep worker's own values apply: shards are queued without limits in the message
# (scanner.services.runs), so a worker reads these from its environment.
PORTMON_SHARD_SOFT_TIME_LIMIT = env_int("PORTMON_SHARD_SOFT_TIME_LIMIT", 3300, lo=1)
PORTMON_SHARD_TIME_LIMIT = env_int("PORTMON_SHARD_TIME_LIMIT", 3600, lo=2)
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 600, lo=1)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 660, lo=2)
for _soft, _hard, _names in (
    (
        PORTMON_SHARD_SOFT_TIME_LIMIT,
        PORTMON_SHARD_TIME_LIMIT,
        "PORTMON_SHARD_SOFT_TIME_LIMIT/_TIME_LIMIT",
    ),
    (CELERY_TASK_SOFT_TIME_LIMIT, CELERY_TASK_TIME_LIMIT, "CELERY_TASK_SOFT_TIME_LIMIT/_LIMIT"),
):
    # The soft limit lets a task clean up (kill its scanner, give its shard back); at or
    # above the hard limit it never fires, and billiard then never arms the hard one.
    if _soft >= _hard:
        raise SettingError(f"{_names}: the soft limit {_soft} s must be below the hard {_hard} s")
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # Redis redelivers an unacknowledged task after the visibility timeout; it must
    # exceed the longest hard limit or a running shard would be handed out twice.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", PORTMON_SHARD_TIME_LIMIT + 600),
        # Look for tasks of dead workers every 10 s (kombu's default scans every 100 s).
        "unacked_restore_interval": 10,
        "unacked_restore_throttle": 1,
    }
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"

SCAN_ZONES = ("internal", "external")
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_DEFAULT_EXCHANGE = "portmon"
CELERY_TASK_DEFAULT_ROUTING_KEY = "default"
# Each queue bound with its own routing key: a queue without one would share the default
# key, and a direct exchange would then copy every task into every queue.
CELERY_TASK_QUEUES = [
    Queue(name, Exchange("portmon", type="direct"), routing_key=name)
    for name in ("default", "fingerprint", "poc", *[f"sweep.{zone}" for zone in SCAN_ZONES])
]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    # axes says "login failed" at INFO as well as WARNING; the warnings are enough.
    "loggers": {"axes": {"level": "WARNING"}},
}

# --- Alerting -----------------------------------------------------------------
PORTMON_NEW_PORT_DAYS = env_int("PORTMON_NEW_PORT_DAYS", 3)
# Events of a run older than this (an import of last week's file) go to the digest only:
# an immediate alert is about something happening now.
PORTMON_IMMEDIATE_MAX_AGE_HOURS = env_int("PORTMON_IMMEDIATE_MAX_AGE_HOURS", 6, lo=1)
PORTMON_CLOSED_AFTER_RUNS = env_int("PORTMON_CLOSED_AFTER_RUNS", 3)
PORTMON_DEGRADED_RATIO = float(env_str("PORTMON_DEGRADED_RATIO", "0.5"))
PORTMON_DIGEST_RECIPIENTS = env_list("PORTMON_DIGEST_RECIPIENTS")
# Days an open event may stay open, per severity, before the overview counts it overdue
# (its "ageing" table); the defaults are a common remediation target.
PORTMON_TARGET_DAYS = {
    "critical": env_int("PORTMON_TARGET_DAYS_CRITICAL", 1, lo=1),
    "high": env_int("PORTMON_TARGET_DAYS_HIGH", 3, lo=1),
    "medium": env_int("PORTMON_TARGET_DAYS_MEDIUM", 14, lo=1),
    "low": env_int("PORTMON_TARGET_DAYS_LOW", 30, lo=1),
}
# The overview's counts over all events and ports are cached this long (0: never) under a
# key that changes with every event, triage step and finished run (docs/dashboard.md).
PORTMON_OVERVIEW_CACHE_SECONDS = env_int("PORTMON_OVERVIEW_CACHE_SECONDS", 60, lo=0)
PORTMON_DIGEST_TIME = env_str("PORTMON_DIGEST_TIME", "08:00")
if not re.fullmatch(r"([01]?[0-9]|2[0-3]):[0-5][0-9]", PORTMON_DIGEST_TIME.strip()):
    raise SettingError(f"PORTMON_DIGEST_TIME={PORTMON_DIGEST_TIME!r} is not HH:MM")
PORTMON_WEBHOOK_URL = env_str("PORTMON_WEBHOOK_URL")
PORTMON_WEBHOOK_SECRET = env_str("PORTMON_WEBHOOK_SECRET")
PORTMON_WEBHOOK_TIMEOUT = env_int("PORTMON_WEBHOOK_TIMEOUT", 10)
# Loopback, link-local and cloud metadata destinations are refused unless this is set.
PORTMON_WEBHOOK_ALLOW_LOCAL = env_bool("PORTMON_WEBHOOK_ALLOW_LOCAL", False)

# --- Host agents ----------------------------------------------------------------
# The shared cache holds the agents' rate-limit counters (every web process counts in one
# place): Redis when PORTMON_CACHE_URL (or a redis:// broker) is set, else the database
# (its table is created by migrate), so the embedded default needs no server either.
PORTMON_CACHE_URL = env_str("PORTMON_CACHE_URL") or (
    CELERY_BROKER_URL if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) else ""
)
if PORTMON_CACHE_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": PORTMON_CACHE_URL,
            "KEY_PREFIX": f"portmon:{_db['NAME']}",
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "portmon_cache",
        }
    }
# A report's body is refused (413) above this many bytes, before it is read.
PORTMON_AGENT_MAX_BODY = env_int("PORTMON_AGENT_MAX_BODY", 1024 * 1024, lo=1024)
# Reports per agent per minute; the client sends one every 5 minutes and drains its spool
# oldest first, so 30 lets a day's backlog (288 reports) through in ten minutes.
PORTMON_AGENT_RATE = env_int("PORTMON_AGENT_RATE", 30, lo=0)
# Replay window: a report collected more than this many seconds ago, or further in the
# future than the clock skew, is refused (409).
PORTMON_AGENT_MAX_AGE = env_int("PORTMON_AGENT_MAX_AGE", 7 * 86400, lo=60)
PORTMON_AGENT_CLOCK_SKEW = env_int("PORTMON_AGENT_CLOCK_SKEW", 300, lo=0)

# --- Scanning -----------------------------------------------------------------
# Probes per shard: masscan managed ~90k probes/s on the 2-core lab machine
# (bench/scan_bench.py), so 8M probes is ~90 s per pass (twice that with --retries 1): a
# lost worker costs that much, and the 62-host benchmark lab (4M probes) is one masscan run.
PORTMON_SHARD_PROBES = env_int("PORTMON_SHARD_PROBES", 8_000_000)
# UDP probes per shard: a silent port costs PORTMON_UDP_TIMEOUT_MS x (retries + 1) on the
# connect path (100k probes at 256 at once, all silent: ~30 min, inside the shard's limit).
PORTMON_UDP_SHARD_PROBES = env_int("PORTMON_UDP_SHARD_PROBES", 100_000, lo=1)
PORTMON_UDP_TIMEOUT_MS = env_int("PORTMON_UDP_TIMEOUT_MS", 1500, lo=50)
PORTMON_UDP_RETRIES = env_int("PORTMON_UDP_RETRIES", 2, lo=0, hi=10)
PORTMON_UDP_CONCURRENCY = env_int("PORTMON_UDP_CONCURRENCY", 256, lo=1)
PORTMON_SHARD_MAX_ATTEMPTS = env_int("PORTMON_SHARD_MAX_ATTEMPTS", 3, lo=1)
# Liveness, not age: a task holding a shard or fingerprint ports writes a heartbeat every
# 2 s; a claim whose heartbeat is older than this belongs to a dead worker and is taken
# over (by the task's redelivered copy at once, else by the reaper).
PORTMON_HEARTBEAT_TIMEOUT = env_int("PORTMON_HEARTBEAT_TIMEOUT", 20, lo=5)
# Queued work nobody started for this long while nothing else of its kind ran (the
# message was lost: a broker restart, a publish that failed) is queued again by the reaper.
PORTMON_REQUEUE_AFTER = env_int("PORTMON_REQUEUE_AFTER", 45, lo=10)
# A run with no progress at all for this long ends (failed, or degraded when only its
# fingerprints are missing) with the reason, so that its policy can run again.
PORTMON_RUN_STALL_TIMEOUT = env_int("PORTMON_RUN_STALL_TIMEOUT", 3600, lo=60)
# Retries double masscan's packets; the default re-probes only unanswered probes instead.
PORTMON_MASSCAN_RETRIES = env_int("PORTMON_MASSCAN_RETRIES", 0)
# UDP: masscan's list is short and no answer tells a lost request from a silent port, so
# each request goes out 1 + this many times (a UDP sweep of the default list is small).
PORTMON_MASSCAN_UDP_RETRIES = env_int("PORTMON_MASSCAN_UDP_RETRIES", 2, lo=0, hi=10)
# Seconds masscan listens after its last probe. Short is safe: a late answer leaves its
# probe unanswered in the ledger, and unanswered probes are probed again (scanner/recall.py).
PORTMON_MASSCAN_WAIT = env_int("PORTMON_MASSCAN_WAIT", 1)
PORTMON_MASSCAN_ADAPTER = env_str("PORTMON_MASSCAN_ADAPTER") or None
PORTMON_MASSCAN_ADAPTER_IP = env_str("PORTMON_MASSCAN_ADAPTER_IP") or None
PORTMON_MASSCAN_ROUTER_MAC = env_str("PORTMON_MASSCAN_ROUTER_MAC") or None
PORTMON_CONNECT_CONCURRENCY = env_int("PORTMON_CONNECT_CONCURRENCY", 2000)
PORTMON_CONNECT_TIMEOUT_MS = env_int("PORTMON_CONNECT_TIMEOUT_MS", 1000)
# A host answering SYN-ACK on more than this many ports AND this share of those probed is a
# SYN proxy, tarpit or middlebox: one host-level finding, its ports not listed one by one.
PORTMON_SYNPROXY_MIN_PORTS = env_int("PORTMON_SYNPROXY_MIN_PORTS", 1000, lo=1)
try:
    PORTMON_SYNPROXY_MIN_SHARE = float(env_str("PORTMON_SYNPROXY_MIN_SHARE", "0.05"))
except ValueError:
    PORTMON_SYNPROXY_MIN_SHARE = -1.0
if not 0 < PORTMON_SYNPROXY_MIN_SHARE < 1:
    raise SettingError("PORTMON_SYNPROXY_MIN_SHARE must be a number between 0 and 1 (e.g. 0.05)")
# Ports seen open in the last N days but missing from a run are re-probed before the run ends.
PORTMON_REPROBE_DAYS = env_int("PORTMON_REPROBE_DAYS", 3)
# Each port's nmap -sV budget (--host-timeout; all ports of a run are probed at once). A
# service that speaks first is named in under a second, an HTTP server on an odd port after
# the NULL probe's wait (PORTMON_NMAP_NULL_WAIT_MS), redis ~5 s later; past that nmap only
# waits out 5 s probes on a port that says nothing it knows (28 of them: 164 s measured).
# 60 s waits out the first 11 probes, up to TLS; a port still unnamed then stays open and
# unnamed this run.
PORTMON_NMAP_PORT_TIMEOUT = env_int("PORTMON_NMAP_PORT_TIMEOUT", 60, lo=5)
# A fingerprint task runs its nmap batches side by side, each within the port timeout
# (nmap notices it at its next probe's end: up to ~8 s late), plus at most one more for
# the named ports of a host that timed out (nmap.fingerprint_many), plus a margin.
# How long nmap -sV listens for a banner before its first request (nmap's own: 6000 ms),
# and then for an answer to two empty lines, its second probe (nmap's own: 5000 ms). Most
# services on odd ports wait for the client, so the first wait is how late their names
# come; one that ignores empty lines (redis) waits out both: redis on a random port 11.4 s
# with nmap's waits, 8.2 s at 2000 + 5000, 5.1 s at 2000 + 2000. A later banner is still
# matched on nmap's next probes, which keep their 5 s (scanner/engines/nmap_probes.py).
# nmap's own values use nmap's own file.
PORTMON_NMAP_NULL_WAIT_MS = env_int("PORTMON_NMAP_NULL_WAIT_MS", 2000, lo=500, hi=6000)
PORTMON_NMAP_GENERICLINES_WAIT_MS = env_int(
    "PORTMON_NMAP_GENERICLINES_WAIT_MS", 2000, lo=500, hi=5000
)
FINGERPRINT_SOFT_TIME_LIMIT = 2 * PORTMON_NMAP_PORT_TIMEOUT + 60
FINGERPRINT_TIME_LIMIT = 2 * PORTMON_NMAP_PORT_TIMEOUT + 120
# nmap -sV mostly waits on services, but each run costs ~0.25 s of CPU: at nice 10 the
# fingerprints streamed during a sweep use idle CPU instead of slowing masscan's pace.
PORTMON_NMAP_NICE = env_int("PORTMON_NMAP_NICE", 10, lo=0, hi=19)
# --- PoC checks ----------------------------------------------------------------
# Events that chain PoC checks, on which zones; allow-listed (suppressed) events only if set.
PORTMON_POC_CHAIN_KINDS = env_list(
    "PORTMON_POC_CHAIN_KINDS", "new_port,high_risk,blacklisted,reopened,service_changed"
)
PORTMON_POC_CHAIN_ZONES = env_list("PORTMON_POC_CHAIN_ZONES", "internal")
PORTMON_POC_CHAIN_SUPPRESSED = env_bool("PORTMON_POC_CHAIN_SUPPRESSED", False)
# A check's own deadline for all its connects and reads; its process is killed 3 s later.
PORTMON_POC_CHECK_TIMEOUT = env_int("PORTMON_POC_CHECK_TIMEOUT", 10, lo=1, hi=600)
# A (port, check) that ran this recently is not chained again; findings are re-checked
# this often (a negative re-check fixes the finding).
PORTMON_POC_DEDUPE_HOURS = env_int("PORTMON_POC_DEDUPE_HOURS", 24, lo=0)
PORTMON_POC_RECHECK_HOURS = env_int("PORTMON_POC_RECHECK_HOURS", 24, lo=1)
PORTMON_POC_MAX_ATTEMPTS = env_int("PORTMON_POC_MAX_ATTEMPTS", 3, lo=1)
POC_SOFT_TIME_LIMIT = PORTMON_POC_CHECK_TIMEOUT + 30
POC_TIME_LIMIT = PORTMON_POC_CHECK_TIMEOUT + 45
CELERY_TASK_ROUTES = {
    "scanner.fingerprint_hosts": {"queue": "fingerprint"},
    "scanner.policy_run": {"queue": "default"},
    "poc.run_check": {"queue": "poc"},
    "poc.chain": {"queue": "poc"},
    "poc.cover": {"queue": "poc"},
}

# --- Fixed schedules ----------------------------------------------------------
# The periodic jobs that always exist, installed idempotently by `manage.py migrate`
# (scanner.services.schedules.fixed_schedules_install). Timing follows these lines; an
# entry an admin disabled stays disabled. Scan policies add their own entries.
PORTMON_FIXED_SCHEDULES: list[dict[str, Any]] = [
    # Hand on work whose worker died or whose message was lost; end stalled runs.
    {"name": "scanner: reap lost shards", "task": "scanner.reap_shards",
     "every_minutes": 1, "expire_seconds": 60},
    # Deliver queued immediate alerts and retry failed sends (a pass older than 2 min is moot).
    {"name": "notify: send due messages", "task": "notify.send_due",
     "every_minutes": 1, "expire_seconds": 120},
    # Diff finished runs whose diff was lost (no run goes unalerted).
    {"name": "alerts: diff runs whose diff was lost", "task": "alerts.diff_pending",
     "every_minutes": 10, "expire_seconds": 600},
    # Reopen ignored events whose accepted risk ran out (the events list's "accept risk").
    {"name": "alerts: reopen lapsed risk acceptances", "task": "alerts.acceptances_lapse",
     "every_minutes": 10, "expire_seconds": 600},
    # Hand on PoC checks whose worker died; queue the daily re-check of open findings.
    {"name": "poc: reap and re-check", "task": "poc.reap",
     "every_minutes": 1, "expire_seconds": 60},
    {"name": "notify: daily digest", "task": "notify.digest",
     "daily_at_setting": "PORTMON_DIGEST_TIME"},
]  # fmt: skip
