"""Settings every taskhub process shares, server and node alike: the environment, Redis, the update
stream, task execution, Celery and logging. No database and no apps: taskhub/settings.py (the server)
and taskhub/settings_node.py (a node worker) add theirs. Every knob comes from the environment
(django-environ); defaults suit a laptop."""

import os
from pathlib import Path

import django_stubs_ext
import environ
from django.core.exceptions import ImproperlyConfigured

from taskhub import private_files
from workers.protocol import redis_url

# Lets admin/DRF classes take type parameters (ModelAdmin[GlobalTask]) at run time.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
# Local state (the SQLite file, static files, the dev admin password, node data) lives here. It holds
# secrets, so it is created 0700. The default var/ an older version made world-readable is tightened;
# a directory named in TASKHUB_VAR_DIR that already exists keeps the modes its owner gave it.
VAR_DIR = Path(os.environ.get("TASKHUB_VAR_DIR", BASE_DIR / "var"))
private_files.make_private_dir(VAR_DIR, tighten_existing=VAR_DIR == BASE_DIR / "var")

env = environ.Env()

DEBUG = env.bool("DEBUG", default=False)
# The default key is only good for a laptop; production sets SECRET_KEY (see README).
DEV_SECRET_KEY = "insecure-dev-only-taskhub-key-set-SECRET_KEY-in-production"  # noqa: S105  # public on purpose
SECRET_KEY = env.str("SECRET_KEY", default=DEV_SECRET_KEY)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis and the update stream ---------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
# With Redis Sentinel, REDIS_URL is sentinel://host:port[,host:port...]/db (the sentinels, not Redis) and
# this names the primary they watch: after a failover every process follows the sentinels to the new
# primary instead of writing to a dead or demoted one (README "Durability of accepted updates").
TASKHUB_REDIS_SENTINEL_MASTER = env.str("TASKHUB_REDIS_SENTINEL_MASTER", default="")
if redis_url.is_sentinel(REDIS_URL):
    if not TASKHUB_REDIS_SENTINEL_MASTER:
        raise ImproperlyConfigured("REDIS_URL is a sentinel:// URL: set TASKHUB_REDIS_SENTINEL_MASTER too")
    try:
        redis_url.parse_sentinel(REDIS_URL)
    except ValueError as exc:  # at start-up, not at the first command
        raise ImproperlyConfigured(f"REDIS_URL: {exc}") from exc
# Bounds on each command of taskhub's own Redis client (workers/protocol/connection.py): to connect, and
# to wait for each answer. A Redis command answers in milliseconds; past these Redis is down or frozen. The
# web answers 503 or carries on without it (README "When Redis or the database is down") instead of holding
# its worker, and the writers, the scheduler and the nodes retry. A node may wait longer: settings_node.py.
TASKHUB_REDIS_CONNECT_TIMEOUT = env.float("TASKHUB_REDIS_CONNECT_TIMEOUT", default=0.5)
TASKHUB_REDIS_SOCKET_TIMEOUT = env.float("TASKHUB_REDIS_SOCKET_TIMEOUT", default=1.0)
# Updates are spread over shards by task_id; one writer at a time owns a shard, which is what
# keeps one task's updates in the order they were sent. Change only while the stream is drained.
TASKHUB_STREAM_PREFIX = env.str("TASKHUB_STREAM_PREFIX", default="taskhub:updates")
TASKHUB_STREAM_SHARDS = env.int("TASKHUB_STREAM_SHARDS", default=8)

# --- Nodes and execution -------------------------------------------------------------------------
# Set by `python -m workers <name>` for a node worker; empty everywhere else.
TASKHUB_NODE_NAME = env.str("TASKHUB_NODE_NAME", default="")
TASKHUB_NODE_DATA_DIR = env.str("TASKHUB_NODE_DATA_DIR", default="")
TASKHUB_NODE_CAPACITY_BLOCKS = env.int("TASKHUB_NODE_CAPACITY_BLOCKS", default=1024)
TASKHUB_HEARTBEAT_SECONDS = env.float("TASKHUB_HEARTBEAT_SECONDS", default=5.0)
# A node's sender, woken from idle by a report, waits this long for the run's next reports, so that a
# short run's received, in_progress and outcome go to the stream as one entry in one round trip
# (workers/node/sender.py); 0 sends each report at once.
TASKHUB_REPORT_LINGER_MS = env.float("TASKHUB_REPORT_LINGER_MS", default=5.0)
# A node whose last heartbeat is older than this is offline (and fails fan-out at once).
TASKHUB_NODE_OFFLINE_SECONDS = env.int("TASKHUB_NODE_OFFLINE_SECONDS", default=20)
# How long an initiator waits for the other participants' answers.
TASKHUB_FANOUT_TIMEOUT = env.float("TASKHUB_FANOUT_TIMEOUT", default=30.0)
# Extra modules that register task types' node halves (workers/protocol/specs.py), e.g. "myorg.taskhub_types".
# Every process loads them: the server validates and places tasks with them, the nodes run them.
TASKHUB_HANDLER_MODULES = env.list("TASKHUB_HANDLER_MODULES", default=[])
# Automatic retries of recoverable errors: per-type limits ("volume_create=5,block_alloc=0"; the
# default is the type's own, 3 for the built-ins) and the exponential backoff between tries.
TASKHUB_RETRY_LIMITS = {
    k: int(v) for k, v in (p.split("=", 1) for p in env.list("TASKHUB_RETRY_LIMITS", default=[]) if "=" in p)
}
# Per-type run timeouts in seconds ("volume_create=600,block_alloc=60"; 0 turns a type's own off): a run
# in_progress longer than this is failed (RunTimeout) and voided by the server's stalled-run sweep
# (tasks_app/fleet/stalled.py). The default is the type's own (workers/protocol/specs.py), none for most.
# Shared, like the retry limits, because a spec answers for both; only the server enforces it.
TASKHUB_RUN_TIMEOUTS = {
    k: float(v) for k, v in (p.split("=", 1) for p in env.list("TASKHUB_RUN_TIMEOUTS", default=[]) if "=" in p)
}
TASKHUB_RETRY_BACKOFF_SECONDS = env.float("TASKHUB_RETRY_BACKOFF_SECONDS", default=2.0)
TASKHUB_RETRY_BACKOFF_MAX_SECONDS = env.float("TASKHUB_RETRY_BACKOFF_MAX_SECONDS", default=60.0)
# An unacknowledged message goes back to its queue after this many seconds, whether or not its
# worker is alive: keep it above the longest handler plus the longest backoff. A node worker that
# restarts after a crash takes its unacknowledged messages back at once (workers/node/redelivery.py).
TASKHUB_REDELIVERY_SECONDS = env.int("TASKHUB_REDELIVERY_SECONDS", default=3600)
# What a node keeps about a run (its ledger, its cancel or void marker) is keyed by run id and expires
# after this long: well past the redelivery window, so a redelivered message still finds it.
TASKHUB_RUN_STATE_TTL_SECONDS = env.int("TASKHUB_RUN_STATE_TTL_SECONDS", default=7 * 24 * 3600)
if TASKHUB_RUN_STATE_TTL_SECONDS < 2 * TASKHUB_REDELIVERY_SECONDS:
    raise ImproperlyConfigured(
        "TASKHUB_RUN_STATE_TTL_SECONDS must be at least twice TASKHUB_REDELIVERY_SECONDS: a redelivered "
        "message must still find its run's ledger and markers"
    )

# --- Celery --------------------------------------------------------------------------------------
# By default the broker is REDIS_URL's Redis; a sentinel:// REDIS_URL is rewritten into the form of
# Celery's own Sentinel transport (sentinel://h1:p1/db;sentinel://h2:p2/db).
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=redis_url.celery_broker_url(REDIS_URL))
# Node workers have no database; they report through the update stream, not a result backend.
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default="") or None
CELERY_TASK_IGNORE_RESULT = True
# The one router: every queue decision is in workers/protocol/queues.py.
CELERY_TASK_ROUTES = ("workers.protocol.queues.route_task",)
CELERY_TASK_DEFAULT_QUEUE = "taskhub.server"
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {"visibility_timeout": TASKHUB_REDELIVERY_SECONDS}
if redis_url.is_sentinel(CELERY_BROKER_URL):
    # Celery's Sentinel transport asks the sentinels for this primary, as our own client does.
    CELERY_BROKER_TRANSPORT_OPTIONS["master_name"] = TASKHUB_REDIS_SENTINEL_MASTER
# A few messages per worker slot. With 1, Celery's threads pool on Redis stops fetching while all
# slots are busy and wakes late (celery/celery#6941): make bench measured 46 vs 185 noop tasks/s.
# Messages a killed worker had prefetched are requeued when it restarts (workers/node/redelivery.py).
CELERY_WORKER_PREFETCH_MULTIPLIER = env.int("CELERY_WORKER_PREFETCH_MULTIPLIER", default=4)
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
