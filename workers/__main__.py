"""`python -m workers <name>`: the Celery worker of one node, on its queue node.<name>.

It needs only the broker (REDIS_URL): a node may sit behind a firewall or on a laptop, so it runs
under taskhub/settings_node.py, which has no database at all, and reports everything through the
update stream. `python manage.py run_node <name>` runs this too.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

NODE_SETTINGS = "taskhub.settings_node"


def build(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """The celery command line and environment for a node worker."""
    from workers.protocol.payload import NAME_RE
    from workers.protocol.queues import node_queue

    parser = argparse.ArgumentParser(prog="python -m workers", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="node name; its queue is node.<name>")
    parser.add_argument("--data-dir", help="where the node keeps its data (default var/nodes/<name>)")
    parser.add_argument("--concurrency", type=int, default=4, help="tasks run at once (threads)")
    parser.add_argument("--capacity-blocks", type=int, help="blocks this node offers to block_alloc")
    parser.add_argument("--loglevel", default="INFO")
    args = parser.parse_args(argv)
    if not NAME_RE.fullmatch(args.name):
        parser.error(f"invalid node name {args.name!r}: use letters, digits, '.', '_' or '-'")
    env = dict(os.environ, DJANGO_SETTINGS_MODULE=NODE_SETTINGS, TASKHUB_NODE_NAME=args.name)
    where = "var/nodes/<name> under TASKHUB_VAR_DIR (workers/node/identity.py)"
    if args.data_dir:
        data_dir = Path(args.data_dir).resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        env["TASKHUB_NODE_DATA_DIR"] = where = str(data_dir)
    if args.capacity_blocks is not None:
        env["TASKHUB_NODE_CAPACITY_BLOCKS"] = str(args.capacity_blocks)
    celery = [
        sys.executable, "-m", "celery", "-A", "taskhub", "worker",
        "--queues", node_queue(args.name),
        "--hostname", f"{args.name}@%h",
        # Threads: handlers mostly wait on disks and peers, and an initiator waiting for its
        # participants must not take the only slot a participant's part would need.
        "--pool", "threads", "--concurrency", str(args.concurrency),
        "--loglevel", args.loglevel,
        "--without-gossip", "--without-mingle",
    ]  # fmt: skip
    print(f"node {args.name}: queue {node_queue(args.name)}, data in {where}", flush=True)
    return celery, env


def main() -> None:
    argv, env = build(sys.argv[1:])
    # exec, not a child: signals (Ctrl-C, SIGTERM, SIGKILL) reach the worker itself.
    os.execve(sys.executable, argv, env)


if __name__ == "__main__":
    main()
