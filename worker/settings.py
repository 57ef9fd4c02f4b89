"""Settings for tg-maintenance, read from the environment (12-factor).

Every variable is listed in the README. Development is the default; with
DJANGO_PRODUCTION=true the settings refuse to start without a strong DJANGO_SECRET_KEY
and refuse DJANGO_DEBUG=true. Every value is read strictly by worker/env.py: a value
that cannot be used is one line naming the variable, never a silent default.
"""

from pathlib import Path

from worker import env
from worker.env import SettingError

BASE_DIR = Path(__file__).resolve().parent.parent
DAY = 24 * 3600
MIN_METRICS_TOKEN_LENGTH = 16


def _production_secret_key() -> str:
    key = env.raw("DJANGO_SECRET_KEY")
    if key is None:
        raise SettingError("DJANGO_SECRET_KEY", "DJANGO_PRODUCTION is on but it is not set")
    if key == env.DEVELOPMENT_SECRET_KEY or key.startswith("django-insecure"):
        raise SettingError("DJANGO_SECRET_KEY", "is a known development key")
    if len(key) < env.MIN_SECRET_LENGTH or len(set(key)) < env.MIN_SECRET_DISTINCT:
        raise SettingError(
            "DJANGO_SECRET_KEY",
            f"is too weak: use at least {env.MIN_SECRET_LENGTH} characters with at least "
            f"{env.MIN_SECRET_DISTINCT} different ones (openssl rand -hex 32)",
        )
    return key


def _metrics_token() -> str:
    """The bearer token /metrics requires; empty: none. Refused when a client could not
    send it in a header (spaces, control or non-ASCII characters) or when it is short
    enough to guess. Never echoed."""
    token = env.raw("MAINTENANCE_METRICS_TOKEN")
    if token is None:
        return ""
    if not all("!" <= char <= "~" for char in token):
        raise SettingError("MAINTENANCE_METRICS_TOKEN", "must be printable ASCII without spaces")
    if len(token) < MIN_METRICS_TOKEN_LENGTH:
        raise SettingError(
            "MAINTENANCE_METRICS_TOKEN",
            f"is too short: use at least {MIN_METRICS_TOKEN_LENGTH} characters "
            "(openssl rand -hex 32)",
        )
    return token


PRODUCTION = env.boolean("DJANGO_PRODUCTION", default=False)

if PRODUCTION:
    SECRET_KEY = _production_secret_key()
    DEBUG = env.boolean("DJANGO_DEBUG", default=False)
    if DEBUG:
        raise SettingError("DJANGO_DEBUG", "must be off when DJANGO_PRODUCTION is on")
else:
    SECRET_KEY = env.text("DJANGO_SECRET_KEY", default=env.DEVELOPMENT_SECRET_KEY)
    DEBUG = env.boolean("DJANGO_DEBUG", default=True)

ALLOWED_HOSTS = env.text_list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.text_list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "chronicles",
    "maintenance",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "worker.urls"
WSGI_APPLICATION = "worker.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.database_url("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Wait for a lock instead of failing at once: the worker and the CLI may share the file.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.time_zone("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

if PRODUCTION:
    # gunicorn serves the admin's static files itself; runserver does it in development.
    MIDDLEWARE.insert(1, "whitenoise.middleware.WhiteNoiseMiddleware")
    SESSION_COOKIE_SECURE = env.boolean("DJANGO_SECURE_COOKIES", default=True)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.log_level("LOG_LEVEL", default="WARNING")},
}

# --- Celery (read by worker/celery.py through the CELERY_ namespace) ---
CELERY_BROKER_URL = env.broker_url("CELERY_BROKER_URL", default="redis://localhost:6379/0")
CELERY_RESULT_BACKEND = env.broker_url(
    "CELERY_RESULT_BACKEND", default=CELERY_BROKER_URL, schemes=env.RESULT_SCHEMES
)
CELERY_TIMEZONE = TIME_ZONE

# JSON only: a pickled message must never be executed.
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_RESULT_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_EXPIRES = 24 * 3600

MAINTENANCE_QUEUE = "maintenance"
CELERY_TASK_ROUTES = {"maintenance.*": {"queue": MAINTENANCE_QUEUE}}
CELERY_TASK_DEFAULT_QUEUE = MAINTENANCE_QUEUE

# A long job must not hoard messages, and a worker that dies mid-task must not lose it.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Processes per worker; unset, Celery starts one per CPU.
CELERY_WORKER_CONCURRENCY = env.integer("CELERY_WORKER_CONCURRENCY", None, 1, 256)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# The worker's time limits: it applies its own (these, or its --soft-time-limit and
# --time-limit flags), never those a message carries (maintenance/worker_limits.py).
# The soft limit lets a run save its checkpoint; after the hard one it cannot. They are
# checked with MAINTENANCE_SLICE_SECONDS below: slice < soft < hard.
CELERY_TASK_SOFT_TIME_LIMIT = env.integer("CELERY_TASK_SOFT_TIME_LIMIT", 3300, 1, 7 * DAY)
CELERY_TASK_TIME_LIMIT = env.integer("CELERY_TASK_TIME_LIMIT", 3600, 1, 7 * DAY)
# Redis re-delivers an unacknowledged message after this many seconds. It must exceed the
# hard time limit, or a long task that is still running would be delivered a second time.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": CELERY_TASK_TIME_LIMIT + 600,
}
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = dict(CELERY_BROKER_TRANSPORT_OPTIONS)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_TRACK_STARTED = True
CELERY_WORKER_SEND_TASK_EVENTS = True

# django-celery-beat's DatabaseScheduler, except that a maintenance schedule whose
# args/kwargs cannot be read becomes a failed run instead of being disabled silently.
CELERY_BEAT_SCHEDULER = "maintenance.schedules:MaintenanceScheduler"
DJANGO_CELERY_BEAT_TZ_AWARE = True

# --- Maintenance runs ---
# A running run whose heartbeat is older than this is dead; the next trigger takes it over.
MAINTENANCE_LEASE_SECONDS = env.integer("MAINTENANCE_LEASE_SECONDS", 60, 1, DAY)
# Beat high availability: the leading beat renews its hold this often (a third of it);
# a standby beat takes over once the leader has not renewed for this many seconds.
MAINTENANCE_BEAT_LEASE_SECONDS = env.integer("MAINTENANCE_BEAT_LEASE_SECONDS", 30, 3, 3600)
# Transient database errors (connection lost, lock timeouts) are retried this many times
# per batch, waiting MAINTENANCE_RETRY_BACKOFF seconds, doubling each time.
MAINTENANCE_DB_RETRIES = env.integer("MAINTENANCE_DB_RETRIES", 5, 0, 100)
MAINTENANCE_RETRY_BACKOFF = env.number("MAINTENANCE_RETRY_BACKOFF", 0.5, 0, 3600)
# A failed run with the same parameters is resumed from its checkpoint within this window.
MAINTENANCE_RESUME_WINDOW_HOURS = env.integer("MAINTENANCE_RESUME_WINDOW_HOURS", 24, 0, 24 * 366)
# Beat sends maintenance.heartbeat every minute; older than this, beat or the worker is down.
MAINTENANCE_HEARTBEAT_STALE_SECONDS = env.integer(
    "MAINTENANCE_HEARTBEAT_STALE_SECONDS", 300, 60, 7 * DAY
)
# An operation is overdue when no run succeeded within its schedule's period plus this.
MAINTENANCE_OVERDUE_GRACE_HOURS = env.number("MAINTENANCE_OVERDUE_GRACE_HOURS", 2, 0, 24 * 366)
# monitor_validation: a schedule's due time with no run recorded this long after is CRITICAL.
MAINTENANCE_MISSED_DUE_GRACE_SECONDS = env.integer(
    "MAINTENANCE_MISSED_DUE_GRACE_SECONDS", 600, 60, 7 * DAY
)
# import_characters refuses files larger than this (bytes).
MAINTENANCE_IMPORT_MAX_BYTES = env.integer(
    "MAINTENANCE_IMPORT_MAX_BYTES", 200 * 1024 * 1024, 1, 1024**4
)
# After this many starts in a row without a committed batch, a run fails saying why.
MAINTENANCE_MAX_ATTEMPTS = env.integer("MAINTENANCE_MAX_ATTEMPTS", 10, 1, 1000)
# A queued run that no worker started within this many seconds is sent again.
MAINTENANCE_REQUEUE_AFTER_SECONDS = env.integer(
    "MAINTENANCE_REQUEUE_AFTER_SECONDS", 300, 1, 7 * DAY
)
# A run on a worker gives the process back after this many seconds of work: it stops at
# a batch boundary as interrupted and goes back on the queue, so no task comes near the
# time limits or Redis' visibility timeout, and long runs take turns with short ones.
MAINTENANCE_SLICE_SECONDS = env.integer("MAINTENANCE_SLICE_SECONDS", 300, 1, 7 * DAY)


def _check_time_limits(slice_seconds: int, soft: int, hard: int) -> None:
    """slice < soft < hard, or one line naming the pair that is out of order (and the
    whole order, with the values). The visibility timeout is the hard limit + 600."""
    order = (
        f"runs need MAINTENANCE_SLICE_SECONDS ({slice_seconds}) < "
        f"CELERY_TASK_SOFT_TIME_LIMIT ({soft}) < CELERY_TASK_TIME_LIMIT ({hard})"
    )
    if soft >= hard:
        raise SettingError(
            "CELERY_TASK_SOFT_TIME_LIMIT", f"must be below CELERY_TASK_TIME_LIMIT; {order}"
        )
    if slice_seconds >= soft:
        raise SettingError(
            "MAINTENANCE_SLICE_SECONDS",
            f"must be below CELERY_TASK_SOFT_TIME_LIMIT (a slice ends first); {order}",
        )


_check_time_limits(MAINTENANCE_SLICE_SECONDS, CELERY_TASK_SOFT_TIME_LIMIT, CELERY_TASK_TIME_LIMIT)

# --- Gentle on a live database (PostgreSQL; see the README, "Throttling") ---
# A batch waits at most this long for a row lock the application holds; then it is
# rolled back, backs off and retries, so the application never waits behind it longer.
MAINTENANCE_LOCK_TIMEOUT_MS = env.integer("MAINTENANCE_LOCK_TIMEOUT_MS", 2000, 1, 600_000)
# No statement of a batch runs longer than this; the batch is retried smaller.
MAINTENANCE_STATEMENT_TIMEOUT_MS = env.integer(
    "MAINTENANCE_STATEMENT_TIMEOUT_MS", 30_000, 100, 24 * 3_600_000
)
# Before a batch, runs back off while a replica replays this far behind the primary ...
MAINTENANCE_MAX_REPLICATION_LAG_S = env.number("MAINTENANCE_MAX_REPLICATION_LAG_S", 30, 0, DAY)
# ... or while more than this many sessions wait on locks.
MAINTENANCE_MAX_LOCK_WAITERS = env.integer("MAINTENANCE_MAX_LOCK_WAITERS", 10, 0, 100_000)
# Without --batch-size, the batch size adapts so that a batch takes about this long.
MAINTENANCE_TARGET_BATCH_MS = env.integer("MAINTENANCE_TARGET_BATCH_MS", 250, 10, 600_000)
# monitor_validation warns when more findings than this appeared in its period.
MAINTENANCE_NEW_FINDINGS_WARNING = env.integer("MAINTENANCE_NEW_FINDINGS_WARNING", 100, 0, 10**12)

# --- Observability ---
# /metrics requires `Authorization: Bearer <this>` when set; unset, it is served only
# with DEBUG on (development) and is off in production mode.
MAINTENANCE_METRICS_TOKEN = _metrics_token()
