"""Settings of the server processes: web, writers, the scheduler, management commands. The shared
part (Redis, execution, Celery, logging) is taskhub/settings_shared.py; a node worker uses
taskhub/settings_node.py instead, which has no database."""

import ipaddress
import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from taskhub.settings_shared import *  # noqa: F403
from taskhub.settings_shared import (
    BASE_DIR,
    DEBUG,
    DEV_SECRET_KEY,
    SECRET_KEY,
    VAR_DIR,
    env,
)

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# --- HTTPS (README "Access control"): TASKHUB_HTTPS=true is production behind TLS -----------------
TASKHUB_HTTPS = env.bool("TASKHUB_HTTPS", default=False)
# Behind a TLS-terminating proxy that sets X-Forwarded-Proto (only then: a client could forge it).
TASKHUB_BEHIND_PROXY = env.bool("TASKHUB_BEHIND_PROXY", default=False)
if TASKHUB_HTTPS:
    if not DEBUG and SECRET_KEY == DEV_SECRET_KEY:
        raise ImproperlyConfigured("TASKHUB_HTTPS=true needs SECRET_KEY from the environment; the default is public")
    SECURE_SSL_REDIRECT = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
    if TASKHUB_BEHIND_PROXY:
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    # /healthz answers plain HTTP, so probes from inside the host or the container need no TLS.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",  # API tokens for scripts, services, nodes and the CLI
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_results",
    "tasks_app",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Rejects oversized bodies before any parser reads them (DRF streams around Django's own limit).
    "tasks_app.middleware.BodySizeLimitMiddleware",
    "tasks_app.middleware.RejectNulMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "taskhub.urls"
WSGI_APPLICATION = "taskhub.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # Project-level overrides (templates/admin/index.html links the operator's dashboard).
        "DIRS": [BASE_DIR / "templates"],
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

# SQLite under var/ is the embedded default; DATABASE_URL=postgres://... switches to PostgreSQL (psycopg 3).
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'taskhub.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        # IMMEDIATE takes the write lock when a transaction starts, so the web process and the
        # writers queue up instead of failing with "database is locked" on lock upgrade.
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not :memory:, so writer processes started by tests see the same database.
    # Named per test run, so two runs at once (a developer's and CI's) never share one file.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test_taskhub_{os.getpid()}.sqlite3")}
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

STATIC_URL = "static/"
STATIC_ROOT = env.path("STATIC_ROOT", default=str(VAR_DIR / "static"))
Path(STATIC_ROOT).mkdir(parents=True, exist_ok=True)  # whitenoise warns on every request without it
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Without collectstatic (tests, a first runserver) whitenoise still finds app static files.
WHITENOISE_USE_FINDERS = env.bool("WHITENOISE_USE_FINDERS", default=True)

# --- Dispatch and the writer ----------------------------------------------------------------------
# How each type picks its node: "first" participant (Kadalu's rule, the default), "least_loaded"
# online participant, or "explicit" (the request must name it): "volume_create=least_loaded,...".
TASKHUB_ASSIGNMENT = dict(p.split("=", 1) for p in env.list("TASKHUB_ASSIGNMENT", default=[]) if "=" in p)
# The sweep publishes tasks that committed but were never published after this many seconds ...
TASKHUB_DISPATCH_GRACE_SECONDS = env.int("TASKHUB_DISPATCH_GRACE_SECONDS", default=5)
# ... and publishes again a task still pending this long after its publish, if its queue is empty.
TASKHUB_REDISPATCH_SECONDS = env.int("TASKHUB_REDISPATCH_SECONDS", default=120)
TASKHUB_SWEEP_SECONDS = env.float("TASKHUB_SWEEP_SECONDS", default=5.0)

TASKHUB_WRITER_BATCH = env.int("TASKHUB_WRITER_BATCH", default=1000)
TASKHUB_WRITER_BLOCK_MS = env.int("TASKHUB_WRITER_BLOCK_MS", default=1000)

# --- API -----------------------------------------------------------------------------------------
TASKHUB_PAGE_SIZE = env.int("TASKHUB_PAGE_SIZE", default=100)
TASKHUB_MAX_PAGE_SIZE = env.int("TASKHUB_MAX_PAGE_SIZE", default=1000)
TASKHUB_MAX_BODY_BYTES = env.int("TASKHUB_MAX_BODY_BYTES", default=1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = TASKHUB_MAX_BODY_BYTES

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PARSER_CLASSES": [
        "tasks_app.api.parsers.SafeJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    # Token first: its WWW-Authenticate header makes "not logged in" a 401 rather than a 403.
    # Session: the admin's login also works in the browsable API (and /api-auth/login/).
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Who may do what: tasks_app/api/permissions.py. The default is the strict one (operators write,
    # other accounts read, node accounts nothing), so a new view is never open by accident.
    "DEFAULT_PERMISSION_CLASSES": ["tasks_app.api.permissions.OperatorOrReadOnly"],
    "EXCEPTION_HANDLER": "tasks_app.api.errors.api_exception_handler",
}

# --- Access control (README "Access control") ------------------------------------------------------
# Clients in these networks may use the seed API (/task, /tasks, /task_update) without credentials, as
# the reference service's clients do. Comma-separated CIDRs; an empty value turns anonymous access off.
TASKHUB_SEED_ANON_NETWORKS = [
    n.strip() for n in env.str("TASKHUB_SEED_ANON_NETWORKS", default="127.0.0.0/8,::1/128").split(",") if n.strip()
]
for _network in TASKHUB_SEED_ANON_NETWORKS:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError as _exc:
        raise ImproperlyConfigured(f"TASKHUB_SEED_ANON_NETWORKS: {_exc}") from _exc
# Reverse proxies in front of the web server that append to X-Forwarded-For. 0: the client's address is
# REMOTE_ADDR, and a request that carries X-Forwarded-For is never anonymous (it came through a proxy).
TASKHUB_TRUSTED_PROXY_COUNT = env.int("TASKHUB_TRUSTED_PROXY_COUNT", default=0)
REST_FRAMEWORK["NUM_PROXIES"] = TASKHUB_TRUSTED_PROXY_COUNT  # the client address DRF's throttles count by
# POST /api/v1/auth/token/ (taskhub login): attempts per client address, against password guessing.
TASKHUB_LOGIN_RATE = env.str("TASKHUB_LOGIN_RATE", default="20/min")

SPECTACULAR_SETTINGS = {
    "TITLE": "taskhub API",
    "DESCRIPTION": "Global tasks DB and distributed job orchestrator.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Served from the sidecar package so the docs page works without internet access.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Operations: metrics, retention (README "Operating it") --------------------------------------
# /metrics answers anyone when true; when false, only staff sessions or DRF tokens (tasks_app/api/metrics.py).
TASKHUB_METRICS_PUBLIC = env.bool("TASKHUB_METRICS_PUBLIC", default=True)
# Finished tasks not updated for this many days are purged by the scheduler (0 keeps them forever),
# in transactions of TASKHUB_RETENTION_BATCH rows; one pass stops after MAX_BATCHES or MAX_SECONDS.
TASKHUB_RETENTION_DAYS = env.float("TASKHUB_RETENTION_DAYS", default=30.0)
TASKHUB_RETENTION_BATCH = env.int("TASKHUB_RETENTION_BATCH", default=1000)
TASKHUB_RETENTION_MAX_BATCHES = env.int("TASKHUB_RETENTION_MAX_BATCHES", default=50)
TASKHUB_RETENTION_MAX_SECONDS = env.float("TASKHUB_RETENTION_MAX_SECONDS", default=20.0)
TASKHUB_RETENTION_EVERY_SECONDS = env.float("TASKHUB_RETENTION_EVERY_SECONDS", default=600.0)
# If set, each purged task (with its history) is appended as a JSON line to <dir>/tasks-YYYY-MM-DD.jsonl first.
TASKHUB_ARCHIVE_DIR = env.str("TASKHUB_ARCHIVE_DIR", default="")


# The server's Celery tasks: the scheduler's sweeps (node work is published by name, never imported).
CELERY_IMPORTS = ("tasks_app.ops.scheduled",)
CELERY_BEAT_SCHEDULE = {
    "sweep-undelivered": {"task": "taskhub.sweep_undelivered", "schedule": TASKHUB_SWEEP_SECONDS},
    "purge-finished": {"task": "taskhub.purge_finished", "schedule": TASKHUB_RETENTION_EVERY_SECONDS},
    "sweep-dead-nodes": {"task": "taskhub.sweep_dead_nodes", "schedule": TASKHUB_SWEEP_SECONDS},
}
# Modules that register task types' server halves (tasks_app/families/): create-time checks and
# completion hooks, e.g. "myorg.taskhub_types_server". Loaded by server processes only.
TASKHUB_SERVER_MODULES = env.list("TASKHUB_SERVER_MODULES", default=[])
