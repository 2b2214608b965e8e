"""Settings of a node worker (`python -m workers <name>`): the shared ones, the node's own app, and no
database at all. A node reaches the server through the broker and the update stream only."""

from taskhub.settings_shared import *  # noqa: F403
from taskhub.settings_shared import env

# Redis bounds (settings_shared.py) with a node's defaults: no client waits on a node's Redis calls, every
# report and heartbeat is retried, and a fan-out answer (workers/node/fanout.py send_answer) is sent once,
# so a node rides out a slow moment rather than fail fast as the web must.
TASKHUB_REDIS_CONNECT_TIMEOUT = env.float("TASKHUB_REDIS_CONNECT_TIMEOUT", default=2.0)
TASKHUB_REDIS_SOCKET_TIMEOUT = env.float("TASKHUB_REDIS_SOCKET_TIMEOUT", default=5.0)

INSTALLED_APPS = ["workers"]
# No database: Django's dummy backend, which refuses any query. Nothing a node runs may need one.
DATABASES: dict[str, dict[str, object]] = {}
# The node's Celery tasks; nothing of the server's.
CELERY_IMPORTS = ("workers.node.celery_tasks",)
