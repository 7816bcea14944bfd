"""Settings of aicache-healing. Every value can be set from the environment (see README)."""

from __future__ import annotations

import os
from pathlib import Path

from config.env import (
    database_from_url,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_path,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = env_path("HEALING_VAR_DIR", BASE_DIR / "var")

DEBUG = env_bool("HEALING_DEBUG", False)
SECRET_KEY = env_str("HEALING_SECRET_KEY", "")
if not SECRET_KEY:
    # Embedded default: a key generated once into the var directory, never committed.
    _key_file = VAR_DIR / "secret-key"
    if _key_file.exists():
        SECRET_KEY = _key_file.read_text().strip()
    else:
        import secrets

        VAR_DIR.mkdir(parents=True, exist_ok=True)
        SECRET_KEY = secrets.token_urlsafe(50)
        _key_file.write_text(SECRET_KEY)
        _key_file.chmod(0o600)

ALLOWED_HOSTS = env_list("HEALING_ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env_list("HEALING_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "compliance",
    "healing",
    "dashboard",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "dashboard.middleware.RequestContextMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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
        },
    }
]

DATABASES = {"default": database_from_url(env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"), base_dir=BASE_DIR)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:overview"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("HEALING_TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env_path("HEALING_STATIC_ROOT", VAR_DIR / "static")
STATICFILES_DIRS = [BASE_DIR / "static"]

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "aicache-healing API",
    "VERSION": "1",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Celery -----------------------------------------------------------------------------------
# The embedded default broker is kombu's filesystem transport: no server to run.
BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),  # exchange tables (kombu's default is ./control)
        "store_processed": False,
    }
    if CELERY_BROKER_URL.startswith("filesystem")
    else {}
)
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = False
CELERY_WORKER_HIJACK_ROOT_LOGGER = False  # keep the product's structured JSON logs in the worker too
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_TIMEZONE = TIME_ZONE
HEALING_DISPATCH_EVERY_SECONDS = env_float("HEALING_DISPATCH_EVERY_SECONDS", 10.0)

# --- The product ------------------------------------------------------------------------------
HEALING = {
    # where the quarantine, artifacts and incremental scan state live
    "QUARANTINE_DIR": env_path("HEALING_QUARANTINE_DIR", VAR_DIR / "quarantine"),
    "ARTIFACT_DIR": env_path("HEALING_ARTIFACT_DIR", VAR_DIR / "artifacts"),
    "STATE_DIR": env_path("HEALING_STATE_DIR", VAR_DIR / "state"),
    "QUARANTINE_RETENTION_DAYS": env_int("HEALING_QUARANTINE_RETENTION_DAYS", 30),
    # a finding must be older than this before a repair may act on it (the store is live)
    "GRACE_SECONDS": env_float("HEALING_GRACE_SECONDS", 60.0),
    "DEFAULT_CHECK_INTERVAL_SECONDS": env_int("HEALING_CHECK_INTERVAL_SECONDS", 300),
    "FUTURE_TOLERANCE_SECONDS": env_float("HEALING_FUTURE_TOLERANCE_SECONDS", 300.0),
    "MAX_ENTRY_BYTES": env_int("HEALING_MAX_ENTRY_BYTES", 16 * 1024 * 1024),
    "MAX_INDEX_BYTES": env_int("HEALING_MAX_INDEX_BYTES", 512 * 1024 * 1024),
    "ISSUE_SAMPLE_SIZE": env_int("HEALING_ISSUE_SAMPLE_SIZE", 20),
    "STORM_SHARE": env_float("HEALING_STORM_SHARE", 0.30),
    "STORM_MIN_ENTRIES": env_int("HEALING_STORM_MIN_ENTRIES", 20),
    "ANOMALY_MIN_SAMPLES": env_int("HEALING_ANOMALY_MIN_SAMPLES", 8),
    "ANOMALY_WINDOW": env_int("HEALING_ANOMALY_WINDOW", 48),
    "ANOMALY_THRESHOLD": env_float("HEALING_ANOMALY_THRESHOLD", 6.0),
    "DISK_FORECAST_HORIZON_HOURS": env_float("HEALING_DISK_FORECAST_HORIZON_HOURS", 72.0),
    "LATENCY_SAMPLE_SIZE": env_int("HEALING_LATENCY_SAMPLE_SIZE", 32),
    "TARGET_LEASE_SECONDS": env_int("HEALING_TARGET_LEASE_SECONDS", 1800),
    # large stores are scanned by this many processes (forked), split by key
    "SCAN_PROCESSES": env_int("HEALING_SCAN_PROCESSES", min(2, os.cpu_count() or 1)),
    "SCAN_PARALLEL_MIN_ENTRIES": env_int("HEALING_SCAN_PARALLEL_MIN_ENTRIES", 20000),
    # approval workflow
    "APPROVAL_TTL_SECONDS": env_int("HEALING_APPROVAL_TTL_SECONDS", 3600),
    "APPROVAL_EXPIRY_WARNING_SECONDS": env_int("HEALING_APPROVAL_EXPIRY_WARNING_SECONDS", 600),
    "REVIEW_DUE_HOURS": env_float("HEALING_REVIEW_DUE_HOURS", 24.0),
    "AUTO_REPAIRS_PER_HOUR": env_int("HEALING_AUTO_REPAIRS_PER_HOUR", 30),
    "BREAKER_FAILURES": env_int("HEALING_BREAKER_FAILURES", 3),
    "BREAKER_WINDOW_SECONDS": env_int("HEALING_BREAKER_WINDOW_SECONDS", 3600),
    "WEBHOOK_TIMEOUT_SECONDS": env_float("HEALING_WEBHOOK_TIMEOUT_SECONDS", 5.0),
    "BASE_URL": env_str("HEALING_BASE_URL", "http://127.0.0.1:8000"),
    "METRICS_TOKEN": env_str("HEALING_METRICS_TOKEN", ""),
    # first start: register ~/.cache/aicache when it exists, and a demo store with injected faults
    "REGISTER_HOME_CACHE": env_bool("HEALING_REGISTER_HOME_CACHE", True),
    "DEMO": env_bool("HEALING_DEMO", True),
    "DEMO_DIR": env_path("HEALING_DEMO_DIR", VAR_DIR / "demo-store"),
    # connection passwords (Redis URLs) are encrypted at rest with this Fernet key
    "CREDENTIALS_KEY": env_str("HEALING_CREDENTIALS_KEY", ""),
    "CREDENTIALS_KEY_FILE": env_path("HEALING_CREDENTIALS_KEY_FILE", VAR_DIR / "credentials.key"),
}

EMAIL_BACKEND = env_str("HEALING_EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env_str("HEALING_EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("HEALING_EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("HEALING_EMAIL_USER", "")
EMAIL_HOST_PASSWORD = env_str("HEALING_EMAIL_PASSWORD", "")
EMAIL_USE_TLS = env_bool("HEALING_EMAIL_TLS", False)
DEFAULT_FROM_EMAIL = env_str("HEALING_EMAIL_FROM", "aicache-healing@localhost")
EMAIL_TIMEOUT = 10

COMPLIANCE = {
    # Ed25519 key: generated here on first start unless supplied; keep a copy of its public half off this machine
    "SIGNING_KEY": env_path("HEALING_SIGNING_KEY", VAR_DIR / "keys" / "audit-ed25519.pem"),
    # a copy of every checkpoint outside the database, so that truncation and wholesale rewrites show
    "CHECKPOINT_DIR": env_path("HEALING_CHECKPOINT_DIR", VAR_DIR / "checkpoints"),
    "CHECKPOINT_EVERY_SECONDS": env_float("HEALING_CHECKPOINT_EVERY_SECONDS", 60.0),
    "REPORT_DIR": env_path("HEALING_REPORT_DIR", VAR_DIR / "reports"),
    "VERIFY_PROCESSES": env_int("HEALING_VERIFY_PROCESSES", min(2, os.cpu_count() or 1)),
    "VERIFY_PARALLEL_MIN_EVENTS": env_int("HEALING_VERIFY_PARALLEL_MIN_EVENTS", 50000),
}

LOG_FORMAT = env_str("HEALING_LOG_FORMAT", "json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(target)s %(repair)s",
        },
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "filters": {"context": {"()": "healing.logctx.ContextFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["context"]}},
    "root": {"handlers": ["console"], "level": env_str("HEALING_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
