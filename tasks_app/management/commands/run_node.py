"""`python manage.py run_node <name>`: the Celery worker of one node, on its queue node.<name>.

It needs only the broker (REDIS_URL): a node may sit behind a firewall or on a laptop, so it never
opens the database and reports everything through the update stream.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from workers.handlers.payload import NAME_RE
from workers.queues import node_queue


class Command(BaseCommand):
    help = "Run the Celery worker of one node (queue node.<name>). Needs only REDIS_URL."
    requires_system_checks: list[str] = []  # some checks may touch the database; a node has none

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="node name; its queue is node.<name>")
        parser.add_argument("--data-dir", help="where the node keeps its data (default var/nodes/<name>)")
        parser.add_argument("--concurrency", type=int, default=4, help="tasks run at once (threads)")
        parser.add_argument("--capacity-blocks", type=int, help="blocks this node offers to block_alloc")
        parser.add_argument("--loglevel", default="INFO")

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["name"]
        if not NAME_RE.match(name):
            raise CommandError(f"invalid node name {name!r}: use letters, digits, '.', '_' or '-'")
        data_dir = Path(options["data_dir"] or Path(settings.VAR_DIR) / "nodes" / name).resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, TASKHUB_NODE_NAME=name, TASKHUB_NODE_DATA_DIR=str(data_dir))
        if options["capacity_blocks"] is not None:
            env["TASKHUB_NODE_CAPACITY_BLOCKS"] = str(options["capacity_blocks"])
        argv = [
            sys.executable, "-m", "celery", "-A", "taskhub", "worker",
            "--queues", node_queue(name),
            "--hostname", f"{name}@%h",
            # Threads: handlers mostly wait on disks and peers, and an initiator waiting for its
            # participants must not take the only slot a participant's part would need.
            "--pool", "threads", "--concurrency", str(options["concurrency"]),
            "--loglevel", options["loglevel"],
            "--without-gossip", "--without-mingle",
        ]  # fmt: skip
        self.stdout.write(f"node {name}: queue {node_queue(name)}, data in {data_dir}")
        sys.stdout.flush()
        # exec, not a child: signals (Ctrl-C, SIGTERM, SIGKILL) reach the worker itself.
        os.execve(sys.executable, argv, env)
