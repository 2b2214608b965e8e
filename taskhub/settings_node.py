"""Settings of a node worker (`python -m workers <name>`): the shared ones, the node's own app, and no
database at all. A node reaches the server through the broker and the update stream only."""

from taskhub.settings_shared import *  # noqa: F403

INSTALLED_APPS = ["workers"]
# No database: Django's dummy backend, which refuses any query. Nothing a node runs may need one.
DATABASES: dict[str, dict[str, object]] = {}
# The node's Celery tasks; nothing of the server's.
CELERY_IMPORTS = ("workers.node.celery_tasks",)
