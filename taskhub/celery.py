"""The one Celery app. All CELERY_* settings come from Django settings (and so from the environment)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "taskhub.settings")

app = Celery("taskhub")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
