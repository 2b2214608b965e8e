"""`python manage.py run_node <name>`: the same as `python -m workers <name>`, the Celery worker of one
node on its queue node.<name>. The worker runs under taskhub/settings_node.py: no database at all."""

from __future__ import annotations

import os
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = (
        "Run the Celery worker of one node (queue node.<name>); the same as `python -m workers`. Needs only REDIS_URL."
    )
    requires_system_checks: list[str] = []  # some checks may touch the database; a node has none

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="node name; its queue is node.<name>")
        parser.add_argument("--data-dir", help="where the node keeps its data (default var/nodes/<name>)")
        parser.add_argument("--concurrency", type=int, default=4, help="tasks run at once (threads)")
        parser.add_argument("--capacity-blocks", type=int, help="blocks this node offers to block_alloc")
        parser.add_argument("--loglevel", default="INFO")

    def handle(self, *args: Any, **options: Any) -> None:
        argv = [sys.executable, "-m", "workers", options["name"], "--concurrency", str(options["concurrency"])]
        argv += ["--loglevel", options["loglevel"]]
        if options["data_dir"]:
            argv += ["--data-dir", options["data_dir"]]
        if options["capacity_blocks"] is not None:
            argv += ["--capacity-blocks", str(options["capacity_blocks"])]
        sys.stdout.flush()
        # exec, not a child: signals (Ctrl-C, SIGTERM, SIGKILL) reach the worker itself.
        os.execv(sys.executable, argv)
