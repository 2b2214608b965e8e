"""`python manage.py run_scheduler`: Celery beat plus the one worker that runs its sweeps.

Run exactly one. It publishes executable tasks whose publish never happened (the process died
between commit and publish, or the broker was down), on the schedule in CELERY_BEAT_SCHEDULE.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from workers.protocol.queues import SERVER_QUEUE


class Command(BaseCommand):
    help = "Run the scheduler: Celery beat with an embedded worker for the server queue (run one)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--loglevel", default="INFO")

    def handle(self, *args: Any, **options: Any) -> None:
        schedule = os.path.join(settings.VAR_DIR, "celerybeat-schedule")
        argv = [
            sys.executable, "-m", "celery", "-A", "taskhub", "worker", "--beat",
            "--schedule", schedule,
            "--queues", SERVER_QUEUE, "--hostname", "scheduler@%h",
            "--pool", "solo", "--loglevel", options["loglevel"],
            "--without-gossip", "--without-mingle",
        ]  # fmt: skip
        os.execv(sys.executable, argv)
