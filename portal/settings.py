"""Settings for the migration control portal, all read from the environment.

Defaults are safe for production (debug off, secure cookies, HTTPS); the demo and the tests
set the variables they need. See README.md, "Configuration".
"""

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from portal.environment import env_bool, env_choice, env_float, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("PORTAL_DEBUG", False)

SECRET_KEY = env_str("PORTAL_SECRET_KEY", allow_file=True)
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "PORTAL_SECRET_KEY: not set. Set it (or PORTAL_SECRET_KEY_FILE) to a long random value."
        )
    SECRET_KEY = "insecure-development-key-only-used-when-PORTAL_DEBUG-is-true"  # noqa: S105

ALLOWED_HOSTS = env_list("PORTAL_ALLOWED_HOSTS", ["localhost", "127.0.0.1"])
CSRF_TRUSTED_ORIGINS = env_list("PORTAL_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "django_htmx",
    "template_partials",
    "django_q",
    "portal",
    "mailboxes",
    "waves",
    "support",
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
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

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
                "portal.context_processors.navigation",
            ],
            "builtins": ["template_partials.templatetags.partials"],
        },
    },
]

# The embedded default is one SQLite file shared by the web server and the worker: WAL and
# IMMEDIATE transactions make writers queue instead of failing with "database is locked".
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}", allow_file=True),
        conn_max_age=env_int("PORTAL_DB_CONN_MAX_AGE", 60, minimum=0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-gb"
# Waves are planned in UK time and cross the clock change: store UTC, show Europe/London with zone.
TIME_ZONE = "Europe/London"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("PORTAL_STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# Security: on unless explicitly turned off (the local demo serves plain HTTP on loopback).
HTTPS = env_bool("PORTAL_HTTPS", not DEBUG)
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_SSL_REDIRECT = HTTPS and env_bool("PORTAL_SSL_REDIRECT", True)
SECURE_HSTS_SECONDS = env_int("PORTAL_HSTS_SECONDS", 31_536_000 if HTTPS else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
SECURE_HSTS_PRELOAD = HTTPS
if env_bool("PORTAL_BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = env_int("PORTAL_SESSION_SECONDS", 8 * 60 * 60, minimum=60)
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Migration control portal API",
    "DESCRIPTION": "Organisations, mailboxes, waves and bookings of a mailbox migration.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
}

# Background work: django-q2 on the database broker. A task's timeout stays below its retry, so
# a slow task is never handed to a second worker while it still runs.
Q_CLUSTER = {
    "name": env_str("PORTAL_Q_CLUSTER_NAME", "portal"),
    "orm": "default",
    "workers": env_int("PORTAL_Q_WORKERS", 2, minimum=1),
    "timeout": env_int("PORTAL_Q_TIMEOUT", 240, minimum=10),
    "retry": env_int("PORTAL_Q_RETRY", 300, minimum=20),
    "max_attempts": 3,
    "save_limit": 200,
    "bulk": 5,
    "poll": 0.5,
    "catch_up": False,
    "ack_failures": True,
}
if Q_CLUSTER["timeout"] >= Q_CLUSTER["retry"]:
    raise ImproperlyConfigured("PORTAL_Q_TIMEOUT: must be below PORTAL_Q_RETRY")

# Email to IT leads about their bookings (waves/emails.py). Without a mail server, messages go
# to the worker's log.
EMAIL_HOST = env_str("PORTAL_EMAIL_HOST", "")
EMAIL_BACKEND = (
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend"
)
EMAIL_PORT = env_int("PORTAL_EMAIL_PORT", 587, minimum=1)
EMAIL_HOST_USER = env_str("PORTAL_EMAIL_USER", "")
EMAIL_HOST_PASSWORD = env_str("PORTAL_EMAIL_PASSWORD", "", allow_file=True)
EMAIL_USE_TLS = env_bool("PORTAL_EMAIL_USE_TLS", True)
EMAIL_TIMEOUT = 30
DEFAULT_FROM_EMAIL = env_str(
    "PORTAL_EMAIL_FROM", "Migration control portal <migration-portal@localhost>"
)
# Where the portal is reached, for the links in emails: by default its first allowed host.
_HOST = next((host.lstrip(".") for host in ALLOWED_HOSTS if host != "*"), "localhost")
PORTAL_URL = env_str("PORTAL_URL", f"https://{_HOST}" if HTTPS else f"http://{_HOST}:8000").rstrip(
    "/"
)

# The transfer engine. See waves/backends/ and README.md, "Configuration".
MIGRATION_BACKEND = env_choice(
    "PORTAL_MIGRATION_BACKEND", "simulator", {"simulator", "exchange_online"}
)
WAVE_POLL_SECONDS = env_float("PORTAL_WAVE_POLL_SECONDS", 10.0, minimum=0.1)
WAVE_DRIVE_SECONDS = env_float("PORTAL_WAVE_DRIVE_SECONDS", 50.0, minimum=1.0)
# A driver holds its wave for its drive plus this margin; a driver that dies leaves the wave to
# another once the lease lapses.
WAVE_DRIVE_LEASE_MARGIN_SECONDS = env_float("PORTAL_WAVE_LEASE_MARGIN_SECONDS", 60.0)
WAVE_MAX_BATCHES = env_int("PORTAL_WAVE_MAX_BATCHES", 50, minimum=1)
# Hours a finished wave's batches stay in the migration service (for Exchange's own reports)
# before the worker removes them: Exchange Online holds at most 100 batches per tenant.
BATCH_KEEP_HOURS = env_float("PORTAL_BATCH_KEEP_HOURS", 24.0, minimum=0.0)
WAVE_SUBMIT_CHUNK = env_int("PORTAL_WAVE_SUBMIT_CHUNK", 2000, minimum=1)
MAILBOX_MAX_ATTEMPTS = env_int("PORTAL_MAILBOX_MAX_ATTEMPTS", 3, minimum=1)

SIMULATOR = {
    "seed": env_int("PORTAL_SIMULATOR_SEED", 2020),
    # Simulated seconds per real second: 60 turns an evening's final sync into minutes.
    "time_scale": env_float("PORTAL_SIMULATOR_TIME_SCALE", 60.0, minimum=0.001),
    "failure_rate": env_float("PORTAL_SIMULATOR_FAILURE_RATE", 0.02, maximum=1.0),
    "mean_mailbox_mb": env_float("PORTAL_SIMULATOR_MEAN_MAILBOX_MB", 1024.0, minimum=1.0),
    "throughput_mb_per_second": env_float("PORTAL_SIMULATOR_THROUGHPUT_MB_S", 8.0, minimum=0.001),
    "max_queue_seconds": env_float("PORTAL_SIMULATOR_MAX_QUEUE_SECONDS", 600.0),
    "completion_seconds": env_float("PORTAL_SIMULATOR_COMPLETION_SECONDS", 120.0),
}

# Exchange Online, driven through the admin endpoint behind the ExchangeOnlineManagement module
# (waves/backends/exchange_online.py). The app signs in with a certificate (preferred; used when
# both are set) or a client secret; the migration endpoint is created once by an administrator.
_EXCHANGE_TENANT_ID = env_str("PORTAL_EXCHANGE_TENANT_ID", "")
EXCHANGE_ONLINE = {
    "tenant_id": _EXCHANGE_TENANT_ID,
    "client_id": env_str("PORTAL_EXCHANGE_CLIENT_ID", ""),
    "client_secret": env_str("PORTAL_EXCHANGE_CLIENT_SECRET", "", allow_file=True),
    "certificate_file": env_str("PORTAL_EXCHANGE_CERTIFICATE_FILE", ""),
    "certificate_thumbprint": env_str("PORTAL_EXCHANGE_CERTIFICATE_THUMBPRINT", ""),
    "authority": env_str(
        "PORTAL_EXCHANGE_AUTHORITY", f"https://login.microsoftonline.com/{_EXCHANGE_TENANT_ID}"
    ),
    "base_url": env_str("PORTAL_EXCHANGE_BASE_URL", "https://outlook.office365.com"),
    # The tenant's *.onmicrosoft.com domain: it names the mailbox that anchors every call.
    "organization": env_str("PORTAL_EXCHANGE_ORGANIZATION", ""),
    "source_endpoint": env_str("PORTAL_EXCHANGE_SOURCE_ENDPOINT", ""),
    "target_delivery_domain": env_str("PORTAL_EXCHANGE_TARGET_DELIVERY_DOMAIN", ""),
    "max_parallel_calls": env_int("PORTAL_EXCHANGE_MAX_PARALLEL_CALLS", 4, minimum=1),
    # StartAfter and CompleteAfter are sent in this zone, with their UTC offset.
    "time_zone": env_str("PORTAL_EXCHANGE_TIME_ZONE", "Europe/London"),
    # Certificate authorities to trust instead of the system's (a TLS-inspecting proxy, or the
    # local stand-in: python -m standins.exchange_online).
    "ca_bundle": env_str("PORTAL_EXCHANGE_CA_BUNDLE", ""),
}
if MIGRATION_BACKEND == "exchange_online":
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    _missing = [
        variable
        for key, variable in [
            ("tenant_id", "PORTAL_EXCHANGE_TENANT_ID"),
            ("client_id", "PORTAL_EXCHANGE_CLIENT_ID"),
            ("organization", "PORTAL_EXCHANGE_ORGANIZATION"),
            ("source_endpoint", "PORTAL_EXCHANGE_SOURCE_ENDPOINT"),
            ("target_delivery_domain", "PORTAL_EXCHANGE_TARGET_DELIVERY_DOMAIN"),
        ]
        if not EXCHANGE_ONLINE[key]
    ]
    if not (EXCHANGE_ONLINE["client_secret"] or EXCHANGE_ONLINE["certificate_file"]):
        _missing.append("PORTAL_EXCHANGE_CERTIFICATE_FILE (or PORTAL_EXCHANGE_CLIENT_SECRET)")
    if _missing:
        raise ImproperlyConfigured(
            f"PORTAL_MIGRATION_BACKEND is exchange_online: set {', '.join(_missing)}"
        )
    try:
        ZoneInfo(EXCHANGE_ONLINE["time_zone"])
    except (ZoneInfoNotFoundError, ValueError):
        raise ImproperlyConfigured(
            f"PORTAL_EXCHANGE_TIME_ZONE: unknown time zone {EXCHANGE_ONLINE['time_zone']!r}"
        ) from None

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("PORTAL_LOG_LEVEL", "INFO")},
}
