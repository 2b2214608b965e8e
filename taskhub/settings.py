"""Settings of the server processes: web, writers, the scheduler, management commands. The shared
part (Redis, execution, Celery, logging) is taskhub/settings_shared.py; a node worker uses
taskhub/settings_node.py instead, which has no database."""

import ipaddress
import os
from datetime import timedelta
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from taskhub.settings_shared import *  # noqa: F403
from taskhub.settings_shared import (
    BASE_DIR,
    CELERY_BROKER_TRANSPORT_OPTIONS,
    DEBUG,
    DEV_SECRET_KEY,
    SECRET_KEY,
    TASKHUB_HEARTBEAT_SECONDS,
    TASKHUB_REDIS_CONNECT_TIMEOUT,
    TASKHUB_REDIS_SOCKET_TIMEOUT,
    VAR_DIR,
    env,
)
from tasks_app.ops import objectives as _objectives

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
    "axes",  # password guessing: failed logins, lockouts (tasks_app/api/lockout.py)
    "tasks_app",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Rejects oversized bodies before any parser reads them (DRF streams around Django's own limit).
    "tasks_app.middleware.BodySizeLimitMiddleware",
    "tasks_app.middleware.RejectNulMiddleware",
    # The database down: a 503 in the surface's JSON envelope with Retry-After, never an HTML 500. Before
    # the middlewares whose work can touch the database (sessions, authentication, axes).
    "tasks_app.middleware.DatabaseUnavailableMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as axes asks: turns a lockout on the admin and /api-auth/login/ into a 429.
    "axes.middleware.AxesMiddleware",
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
    # Seconds to wait for PostgreSQL to accept a connection (libpq's connect_timeout, 2 at least; a
    # connect_timeout in DATABASE_URL wins). Unset, libpq waits for the kernel's TCP timeout, minutes,
    # and an unreachable database would hold a web thread that long instead of answering 503.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", env.int("TASKHUB_DB_CONNECT_TIMEOUT", default=3)
    )
    # A pool of at most this many connections per process (Django's, psycopg_pool), set for the web server's
    # processes by gunicorn.conf.py: a gthread worker has GUNICORN_THREADS + TASKHUB_EVENT_STREAMS threads,
    # and each would otherwise keep a connection of its own (CONN_MAX_AGE) once it had served a request,
    # more than PostgreSQL's max_connections across two processes. 0 (writers, scheduler, manage.py): none.
    _pool_size = env.int("TASKHUB_DB_POOL_SIZE", default=0)
    if _pool_size > 0:
        DATABASES["default"]["CONN_MAX_AGE"] = 0  # the pool keeps the connections, not the threads
        DATABASES["default"]["OPTIONS"]["pool"] = {
            "min_size": 1,
            "max_size": _pool_size,
            # A request that finds every connection taken waits this long, then answers 503 (the database
            # is then as good as down for it: tasks_app/middleware.py).
            "timeout": env.float("TASKHUB_DB_POOL_TIMEOUT", default=5.0),
        }
        # Django's backend plus a breaker, so that a database that is down is a 503 at once rather than
        # after the pool's timeout, and a new pool once it is back (tasks_app/postgres/base.py).
        DATABASES["default"]["ENGINE"] = "tasks_app.postgres"
    # Named per test run too (pytest-django creates and drops it): under the default test_<NAME>, a
    # second run at once would drop the database the first is using.
    DATABASES["default"]["TEST"] = {"NAME": f"test_{DATABASES['default']['NAME']}_{os.getpid()}"}

# axes first: it refuses a locked-out user name or address before any password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

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
# How each type picks its node among those that may take it (tasks_app/fleet/placement.py): "balanced"
# (the default: least loaded; "least_loaded" is the same), "first" participant (Kadalu's rule), or
# "explicit" (the request must name it): "volume_create=first,block_alloc=explicit".
TASKHUB_ASSIGNMENT = dict(p.split("=", 1) for p in env.list("TASKHUB_ASSIGNMENT", default=[]) if "=" in p)
# The sweep publishes tasks that committed but were never published after this many seconds ...
TASKHUB_DISPATCH_GRACE_SECONDS = env.int("TASKHUB_DISPATCH_GRACE_SECONDS", default=5)
# ... and publishes again a task still pending this long after its publish, if its queue is empty.
TASKHUB_REDISPATCH_SECONDS = env.int("TASKHUB_REDISPATCH_SECONDS", default=120)
TASKHUB_SWEEP_SECONDS = env.float("TASKHUB_SWEEP_SECONDS", default=5.0)
# The stalled-run sweep (tasks_app/fleet/stalled.py, every TASKHUB_SWEEP_SECONDS) recovers a received or
# in_progress task whose live node no longer lists its run: only on a heartbeat taken longer than this after
# the task's last change (and after the node's worker started). Two heartbeats and a margin by default, for
# a report on its way and the clocks of the database and Redis; a run listed by its node is never touched.
TASKHUB_STALLED_GRACE_SECONDS = env.float("TASKHUB_STALLED_GRACE_SECONDS", default=2 * TASKHUB_HEARTBEAT_SECONDS + 5)

TASKHUB_WRITER_BATCH = env.int("TASKHUB_WRITER_BATCH", default=1000)
TASKHUB_WRITER_BLOCK_MS = env.int("TASKHUB_WRITER_BLOCK_MS", default=1000)
# POST /task_update answers 200 only once this many replicas of the Redis primary hold the update (Redis
# WAIT, for at most TASKHUB_UPDATE_WAIT_MS), else 503: an acknowledged update then survives losing the
# primary to a failover. 0 (the default) answers once the primary has it; what that survives is in
# README "Durability of accepted updates". The wait holds a web thread: keep it short.
TASKHUB_UPDATE_WAIT_REPLICAS = env.int("TASKHUB_UPDATE_WAIT_REPLICAS", default=0)
TASKHUB_UPDATE_WAIT_MS = env.int("TASKHUB_UPDATE_WAIT_MS", default=500)
if TASKHUB_UPDATE_WAIT_REPLICAS < 0 or (TASKHUB_UPDATE_WAIT_REPLICAS and TASKHUB_UPDATE_WAIT_MS < 1):
    # WAIT with a timeout of 0 waits forever.
    raise ImproperlyConfigured("TASKHUB_UPDATE_WAIT_REPLICAS must be 0 or more, and TASKHUB_UPDATE_WAIT_MS 1 or more")

# --- API -----------------------------------------------------------------------------------------
TASKHUB_PAGE_SIZE = env.int("TASKHUB_PAGE_SIZE", default=100)
TASKHUB_MAX_PAGE_SIZE = env.int("TASKHUB_MAX_PAGE_SIZE", default=1000)
TASKHUB_MAX_BODY_BYTES = env.int("TASKHUB_MAX_BODY_BYTES", default=1024 * 1024)
# POST /api/v1/tasks/bulk/ takes at most this many tasks (one transaction; the body must also fit
# TASKHUB_MAX_BODY_BYTES).
TASKHUB_BULK_MAX = env.int("TASKHUB_BULK_MAX", default=1000)
DATA_UPLOAD_MAX_MEMORY_SIZE = TASKHUB_MAX_BODY_BYTES
# Long polls (GET /api/v1/tasks/<id>/?wait=) each hold a gunicorn thread for up to 60 s. At most this many
# wait at once per process (tasks_app/api/longpoll.py; beyond it a 429), so that the other threads always
# serve everything else. The default leaves two of gunicorn.conf.py's threads (GUNICORN_THREADS, 8) free.
TASKHUB_LONGPOLL_SLOTS = env.int("TASKHUB_LONGPOLL_SLOTS", default=max(1, env.int("GUNICORN_THREADS", default=8) - 2))
# The event stream (GET /api/v1/events/, tasks_app/api/events.py). Each stream holds a gunicorn thread
# while it is open; gunicorn.conf.py adds this many threads per process on top of GUNICORN_THREADS, and
# beyond it a stream is refused with a 429, so streams never take the threads that serve the rest.
TASKHUB_EVENT_STREAMS = env.int("TASKHUB_EVENT_STREAMS", default=64)
# How often each web process reads new history rows for all of its streams (one query, whatever the
# number of streams), seconds.
TASKHUB_EVENTS_POLL_SECONDS = env.float("TASKHUB_EVENTS_POLL_SECONDS", default=0.25)
# Events queued for one stream whose client reads too slowly; past it the stream is cut off (an `event:
# cutoff`), and the client resumes with Last-Event-ID from the history table. Bounds each stream's memory.
TASKHUB_EVENTS_BUFFER = env.int("TASKHUB_EVENTS_BUFFER", default=10_000)
# A stream ends after this long (`event: end`); EventSource and `taskhub events` reconnect with
# Last-Event-ID and lose nothing. Spreads long-lived clients over processes again after a restart.
TASKHUB_EVENTS_MAX_SECONDS = env.float("TASKHUB_EVENTS_MAX_SECONDS", default=300.0)
# A stream whose client takes none of what is written for this long is closed (under gunicorn), and its
# slot and thread are free again: a client that stops reading cannot hold them.
TASKHUB_EVENTS_SEND_TIMEOUT_SECONDS = env.float("TASKHUB_EVENTS_SEND_TIMEOUT_SECONDS", default=30.0)
# A history id missing below a visible one is a transaction still running (on PostgreSQL the stream waits
# until it ends, read from the snapshot) or a row that will never be seen (rolled back, deleted). The
# stream waits at most this long for one, in case a transaction elsewhere holds the snapshot back.
TASKHUB_EVENTS_GAP_SECONDS = env.float("TASKHUB_EVENTS_GAP_SECONDS", default=30.0)
# How deeply JSON in a request may nest (task_data, task_status_data, any body), on every write path.
# Real payloads nest a few levels; the admin, the renderers and the CLI recurse, and a body nested
# hundreds deep made them fail with RecursionError.
TASKHUB_MAX_JSON_DEPTH = env.int("TASKHUB_MAX_JSON_DEPTH", default=32)

REST_FRAMEWORK = {
    # drf-spectacular's, plus each operation's error answers (tasks_app/api/schema.py).
    "DEFAULT_SCHEMA_CLASS": "tasks_app.api.schema.TaskhubAutoSchema",
    # django-filter's, strict: an unknown query parameter or an empty choice is a 400, not ignored.
    "DEFAULT_FILTER_BACKENDS": ["tasks_app.api.filters.StrictFilterBackend"],
    # JSON only (415 for anything else): a form or text/plain body is what a cross-site page can send
    # without a preflight, and a multipart "[]" was read as an empty task.
    "DEFAULT_PARSER_CLASSES": ["tasks_app.api.parsers.SafeJSONParser"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        # DRF's, plus a task type's fields on the task list's POST form (tasks_app/api/browsable.py).
        "tasks_app.api.browsable.TaskhubBrowsableAPIRenderer",
    ],
    # Token first: its WWW-Authenticate header makes "not logged in" a 401 rather than a 403.
    # Session: the admin's login also works in the browsable API (and /api-auth/login/).
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tasks_app.api.authentication.TaskhubTokenAuthentication",  # Token or Bearer, as on every surface
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
# Lockout after failed passwords, on every password login (the admin, /api-auth/login/ and the token
# endpoint), by django-axes: this many failures for one user name (from any address), or from one
# address (for any user names), lock that user name or that address out, right password or not. Counted
# in the database, so every process and every restart sees them. A correct login forgets the user's
# failures. Operators unlock with `manage.py axes_reset_username <user>`, `axes_reset_ip <ip>`, `axes_reset`.
TASKHUB_LOGIN_FAILURE_LIMIT = env.int("TASKHUB_LOGIN_FAILURE_LIMIT", default=5)
if TASKHUB_LOGIN_FAILURE_LIMIT < 1:
    raise ImproperlyConfigured("TASKHUB_LOGIN_FAILURE_LIMIT must be at least 1 (0 would lock everyone out)")
# Minutes a lockout lasts after the last failure (a failure during the lockout starts it again).
# 0: until an operator unlocks it, which hands anyone who knows a user name a way to lock that user out.
TASKHUB_LOGIN_LOCKOUT_MINUTES = env.float("TASKHUB_LOGIN_LOCKOUT_MINUTES", default=15.0)
AXES_FAILURE_LIMIT = TASKHUB_LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=TASKHUB_LOGIN_LOCKOUT_MINUTES) if TASKHUB_LOGIN_LOCKOUT_MINUTES > 0 else None
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # each on its own, not the pair
# The address taskhub trusts (TASKHUB_TRUSTED_PROXY_COUNT), not axes' own guess from headers.
AXES_CLIENT_IP_CALLABLE = "tasks_app.api.lockout.lockout_address"
AXES_RESET_ON_SUCCESS = True
# axes' database handler, but a correct login forgets only that user's failures, not its address's.
AXES_HANDLER = "tasks_app.api.lockout.LockoutHandler"
AXES_COOLOFF_MESSAGE = (
    "Too many failed logins for this user or from this address: try again in "
    f"{TASKHUB_LOGIN_LOCKOUT_MINUTES:g} minutes, or ask an operator to unlock it."
)
AXES_PERMALOCK_MESSAGE = "Too many failed logins for this user or from this address: ask an operator to unlock it."

SPECTACULAR_SETTINGS = {
    "TITLE": "taskhub API",
    "DESCRIPTION": "Global tasks DB and distributed job orchestrator.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Served from the sidecar package so the docs page works without internet access.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Request and response shapes apart: a request never carries read-only fields, nor needs them.
    "COMPONENT_SPLIT_REQUEST": True,
    # A status a client writes, and one it reads, are two enums (drf-spectacular would give both one name).
    "ENUM_NAME_OVERRIDES": {
        "TaskStatusEnum": "workers.protocol.status.STATUS_VALUES",
        "WritableTaskStatusEnum": "tasks_app.api.schema.WRITABLE_STATUSES",
    },
    # The seed API is plain Django views, so its paths are written by hand and merged in here.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "tasks_app.api.schema.refine_fields",
        "tasks_app.api.schema.add_seed_api",
        "tasks_app.api.task_types.add_task_data_components",
    ],
}

# --- Dependencies down (README "When Redis or the database is down") ------------------------------
# What a 503 for a dependency that is down tells clients to wait, in seconds (the Retry-After header):
# about what a restarted Redis or PostgreSQL takes to answer again.
TASKHUB_RETRY_AFTER_SECONDS = env.int("TASKHUB_RETRY_AFTER_SECONDS", default=5)
# After a failed metrics write or publish, this process skips those best-effort calls to that Redis for
# this many seconds (tasks_app/ops/breaker.py): during an outage, each request would pay the timeout again.
TASKHUB_REDIS_BREAKER_SECONDS = env.float("TASKHUB_REDIS_BREAKER_SECONDS", default=5.0)
# After the web's database pool found the database unreachable, requests answer 503 at once for this long,
# then one of them tries a direct connect (tasks_app/postgres/base.py).
TASKHUB_DB_BREAKER_SECONDS = env.float("TASKHUB_DB_BREAKER_SECONDS", default=1.0)
# Counters (tasks_app/ops/metrics.py) are sent to Redis together, at most this long after they were
# counted, instead of one round trip per create or writer batch; 0 sends each at once.
TASKHUB_METRICS_FLUSH_SECONDS = env.float("TASKHUB_METRICS_FLUSH_SECONDS", default=1.0)
# Publishing from the server (an executed create's publish after its commit, the sweep, beat) gives up at
# once when the broker does not answer: a failed publish fails nothing, since the sweep publishes what was
# never published (tasks_app/tasks/dispatch.py). Kombu's defaults retry and reconnect for seconds and wait
# for an answer forever, which held web requests for up to 7.9 s in a Redis outage. Bounded like
# taskhub's own client (TASKHUB_REDIS_*_TIMEOUT). Server processes only: nodes keep Celery's defaults.
CELERY_TASK_PUBLISH_RETRY = False
CELERY_BROKER_CONNECTION_TIMEOUT = TASKHUB_REDIS_CONNECT_TIMEOUT
CELERY_BROKER_TRANSPORT_OPTIONS = {
    **CELERY_BROKER_TRANSPORT_OPTIONS,
    "socket_timeout": TASKHUB_REDIS_SOCKET_TIMEOUT,
    "socket_connect_timeout": TASKHUB_REDIS_CONNECT_TIMEOUT,
    "max_retries": 0,  # one connection attempt per publish (kombu's default_channel)
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
# Latency objectives per task type, judged per node on the dashboard and at /api/v1/stats/ over their window:
# "<task_type>=<measure>:p<percentile>:<seconds>,...", e.g. "volume_create=end_to_end:p95:30" (the p95 of
# volume_create's end-to-end time is at most 30 s). Syntax and meaning: tasks_app/ops/objectives.py. A
# malformed value stops the process here; an unknown task type is a system check's error (taskhub.E002).
try:
    TASKHUB_LATENCY_OBJECTIVES = _objectives.parse(env.str("TASKHUB_LATENCY_OBJECTIVES", default=""))
except ValueError as _exc:
    raise ImproperlyConfigured(f"TASKHUB_LATENCY_OBJECTIVES: {_exc}") from _exc


# The server's Celery tasks: the scheduler's sweeps (node work is published by name, never imported).
CELERY_IMPORTS = ("tasks_app.ops.scheduled",)
CELERY_BEAT_SCHEDULE = {
    "sweep-undelivered": {"task": "taskhub.sweep_undelivered", "schedule": TASKHUB_SWEEP_SECONDS},
    "purge-finished": {"task": "taskhub.purge_finished", "schedule": TASKHUB_RETENTION_EVERY_SECONDS},
    "sweep-dead-nodes": {"task": "taskhub.sweep_dead_nodes", "schedule": TASKHUB_SWEEP_SECONDS},
    "sweep-stalled-runs": {"task": "taskhub.sweep_stalled_runs", "schedule": TASKHUB_SWEEP_SECONDS},
}
# Modules that register task types' server halves (tasks_app/families/): create-time checks and
# completion hooks, e.g. "myorg.taskhub_types_server". Loaded by server processes only.
TASKHUB_SERVER_MODULES = env.list("TASKHUB_SERVER_MODULES", default=[])
