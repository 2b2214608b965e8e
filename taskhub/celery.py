"""The one Celery app. All CELERY_* settings come from Django settings (and so from the environment):
taskhub/settings.py for the server's processes, taskhub/settings_node.py for a node worker. Each names
the modules of its own Celery tasks (CELERY_IMPORTS), so a node never imports the server's."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "taskhub.settings")

app = Celery("taskhub")
app.config_from_object("django.conf:settings", namespace="CELERY")
