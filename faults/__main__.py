"""`python -m faults`: start a private stack, run the experiments, print the table.

  python -m faults                 every experiment (make faults)
  python -m faults --quick         a few, small (under ~3 minutes; tests/test_faults.py runs it)
  python -m faults --soak 10       the soak alone, for 10 minutes (make soak MINUTES=10)
  python -m faults --only node_kill,pg_stop

Everything runs on 127.0.0.1 in a temporary directory (its path is printed; kept with --keep, or when
something went wrong, for the logs). The exit code is 1 when any experiment lost a task, ran one twice,
moved one backwards, left one stuck, or could not run.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from faults import experiments, procs, report
from faults.audit import NodeRecords, Row
from faults.client import Api, executed_body
from faults.infra import PrivatePostgres, PrivateRedis, postgres_bindir, wait_for
from faults.stack import NODES, Stack, child_env


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the bounded run: fewer experiments, small counts")
    parser.add_argument("--soak", type=float, metavar="MINUTES", help="run only the soak, for this many minutes")
    parser.add_argument("--only", help="comma-separated experiments to run (names as in faults/experiments.py)")
    parser.add_argument("--settle", type=float, help="seconds each experiment's tasks get to finish")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    parser.add_argument("--keep", action="store_true", help="keep the run's directory (logs, data) afterwards")
    parser.add_argument("--sqlite", action="store_true", help="use SQLite even when PostgreSQL is installed")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    procs.install_cleanup()
    base = Path(tempfile.mkdtemp(prefix="taskhub-faults-"))
    print(f"fault suite: logs and data in {base}", flush=True)
    ok = False
    try:
        ok = run(args, base)
    finally:
        procs.stop_all()
        if ok and not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"logs and data kept in {base}", flush=True)
    return 0 if ok else 1


def run(args: argparse.Namespace, base: Path) -> bool:
    started = time.monotonic()
    redis = PrivateRedis(base)
    redis.start()
    bindir = None if args.sqlite else postgres_bindir()
    postgres: PrivatePostgres | None = None
    if bindir is not None:
        postgres = PrivatePostgres(base, bindir)
        postgres.init()
        database_url = postgres.url
        print(f"Redis {redis.url} (AOF everysec), PostgreSQL {bindir.parent.name} on port {postgres.port}", flush=True)
    else:
        database_url = f"sqlite:///{base / 'var' / 'taskhub.sqlite3'}"
        why = "--sqlite" if args.sqlite else "no PostgreSQL binaries (initdb, pg_ctl) found"
        print(f"Redis {redis.url} (AOF everysec); SQLite, not PostgreSQL: {why}. The PostgreSQL experiment is "
              "skipped.", flush=True)  # fmt: skip

    # This process reads the run's database (the audit) and registers the nodes: its Django settings must
    # point where the children's do, before Django is set up.
    os.environ.update(child_env(base, redis.url, database_url))
    import django

    django.setup()

    stack = Stack(base, redis.url, database_url)
    stack.migrate()
    stack.register()
    stack.start_all()
    print(f"stack up in {time.monotonic() - started:.0f} s: gunicorn {stack.base_url}, 2 writers, the scheduler, "
          f"nodes {', '.join(NODES)}", flush=True)  # fmt: skip

    sizes = experiments.QUICK if args.quick else experiments.FULL
    if args.settle:
        sizes = experiments.Sizes(**{**sizes.__dict__, "settle": args.settle})
    api = Api(stack.base_url, stack.token)
    records = NodeRecords({node: stack.node_dir(node) for node in NODES})
    suite = experiments.Suite(stack, redis, postgres, api, sizes, records)
    _, created = api.create(executed_body("noop", {"node": "node1"}))
    suite.probe_task_id = created["data"]["task_id"]
    _, created = api.create({"task_type": "fault_probe", "task_data": {}})
    suite.probe_tracked_id = created["data"]["task_id"]

    for name, experiment in _choose(args):
        print(f"== {name}", flush=True)
        try:
            _ensure_up(suite)
            row = experiment(suite)
        except Exception as exc:
            traceback.print_exc()
            row = Row(name, 0, notes=[f"error: {type(exc).__name__}: {exc}"])
        suite.rows.append(row)
        print("   " + " | ".join(report.cells(row)), *(f"   {note}" for note in row.notes), sep="\n", flush=True)

    print(f"\nfault suite: {len(suite.rows)} experiment(s) in {(time.monotonic() - started) / 60:.1f} min, "
          f"{'PostgreSQL' if postgres else 'SQLite'}\n", flush=True)  # fmt: skip
    print(report.table(suite.rows), flush=True)
    if args.json:
        args.json.write_text(json.dumps([r.as_dict() for r in suite.rows], indent=2))
    stack.stop_all()
    from django.db import connections

    connections.close_all()
    return not any(report.failed(r) for r in suite.rows)


def _choose(args: argparse.Namespace) -> list[tuple[str, experiments.Experiment]]:
    if args.soak is not None:
        minutes = float(args.soak)
        return [("soak", lambda suite: experiments.soak(suite, minutes))]
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in experiments.BY_NAME]
        if unknown:
            raise SystemExit(f"unknown experiment(s) {', '.join(unknown)}; known: {', '.join(experiments.BY_NAME)}")
        return [(n, experiments.BY_NAME[n]) for n in names]
    run = experiments.QUICK_RUN if args.quick else experiments.FULL_RUN
    return [(fn.__name__, fn) for fn in run]


def _ensure_up(suite: experiments.Suite) -> None:
    """Before each experiment: Redis, PostgreSQL and every process of the stack running (an experiment that
    failed half-way may have left one down)."""
    if not suite.redis.up():
        suite.redis.start()
    if suite.postgres is not None and not suite.postgres.up():
        suite.postgres.start()
    restarted = suite.stack.ensure_up()
    if restarted:
        print(f"  restarted before the experiment: {', '.join(restarted)}", flush=True)
    for node in NODES:
        wait_for(functools.partial(suite.stack.node_alive, node), f"{node}'s heartbeat", 60)
    experiments.canary(suite)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
