"""`python manage.py run_writer`: one writer replica. Run as many as the load needs."""

from __future__ import annotations

import signal
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from tasks_app.tasks.writer import run_forever


class Command(BaseCommand):
    help = "Apply the task-update stream to the tasks table, in batches (run any number of these)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=None, help="entries per transaction")

    def handle(self, *args: Any, **options: Any) -> None:
        stopping = False

        def stop(signum: int, frame: object) -> None:
            # Finish the batch in hand, then leave; SIGKILL is also safe, just less polite.
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        run_forever(lambda: stopping, batch_size=options["batch_size"])
