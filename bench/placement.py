"""(p) Placement (issue 11): what choosing a node costs a single services.task_create, in this process.

The bench's database and Redis (cfg), like section (e). Thirty member nodes `bench-place-00` .. `-29` of
the cluster `bench-place` are registered with a fresh heartbeat (so all are online) and a large slots
capacity (so a create that asks for a slot never finds none free), and the table is filled first, in
one INSERT ... SELECT: BENCH_PLACEMENT_ROWS finished tasks (default 100,000) over the first three nodes,
1,000 on each of the other 27, and BENCH_PLACEMENT_OPEN unfinished ones (default 20) on every node, half
of them holding a slot. Then BENCH_PLACEMENT_N creates (default 300) of each of:

- noop with task_data.node: one candidate, no load read (the create of section d);
- volume_create over 3 nodes naming its node (rule explicit): the volume family's checks, no load read;
- volume_create over 3 nodes, balanced (the default rule): the unfinished count per node (one GROUP BY),
  the last-assigned probe of each node, on top of the above;
- the same with TASKHUB_ASSIGNMENT=volume_create=first;
- balanced with constraints {"capacity": {"slots": 1}}: one transaction that locks the node rows and
  reads what their unfinished tasks reserve; sequential, then from BENCH_PLACEMENT_THREADS threads
  (default 4; each its own database connection, closed at its end);
- a distribute volume over all 30 nodes, balanced, and naming its node (to separate placement from
  the family's per-unit checks).

Every create publishes its run to the node's queue after its commit, as in production (nothing consumes
it). Each measurement starts from the same table: its tasks are deleted after it. Rates are creates
over wall time; p50/p99 are of each create call. Afterwards every row on the bench nodes (and their
history), the nodes, the cluster and the nodes' queues are removed.

`python -m bench.placement explain <node> ...` prints EXPLAIN ANALYZE of the balanced rule's queries on
the database of BENCH_DATABASE_URL, in a read-only transaction (nothing is written): for a big table
made by another section, named by its own node names.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bench.config import Config, setup_django
from bench.db import connect
from bench.report import Row

SECTION = "p"  # bench/__main__.py: (p) placement
CLUSTER = "bench-place"
NODES = [f"bench-place-{i:02d}" for i in range(30)]
THREE = NODES[:3]
SOURCE = "bench-placement"
ID_PREFIX = "bench-place-"
SLOTS = 1_000_000  # every node's capacity: never runs out however many creates reserve one
OTHER_NODE_ROWS = 1_000  # finished tasks on each node beyond the first three
SLOT = {"capacity": {"slots": 1}}


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


@dataclass(frozen=True)
class Timing:
    label: str
    seconds: list[float]  # each create call
    wall: float
    threads: int
    queries: int  # SQL statements of one create (one more, after the timed ones)
    check: str

    @property
    def rate(self) -> float:
        return len(self.seconds) / self.wall if self.wall else 0.0

    def pct(self, p: float) -> float:
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000


def measure(cfg: Config) -> list[Row]:
    """Every measurement above, one Row each; removes its rows, nodes, cluster and queues."""
    from django.apps import apps

    if not apps.ready:
        setup_django(cfg)
    n, threads = _int("BENCH_PLACEMENT_N", 300), _int("BENCH_PLACEMENT_THREADS", 4)
    rows, open_per_node = _int("BENCH_PLACEMENT_ROWS", 100_000), _int("BENCH_PLACEMENT_OPEN", 20)
    _remove(cfg)  # what a killed run left
    made_cluster = _register()
    try:
        started = time.perf_counter()
        filled = _fill(cfg, rows, open_per_node)
        print(
            f"placement: {filled:,} tasks on {len(NODES)} nodes filled in {time.perf_counter() - started:.1f} s; "
            f"{n} creates per measurement ...",
            flush=True,
        )
        results = _run_all(cfg, n, threads)
    finally:
        _remove(cfg)
        _unregister(made_cluster)
    return [_row(t) for t in results]


def _run_all(cfg: Config, n: int, threads: int) -> list[Timing]:
    from django.test.utils import override_settings

    out = [
        _measure(cfg, "noop with task_data.node (1 candidate)", n, _noop),
        _measure(cfg, "volume_create, 3 nodes, node= (explicit)", n, _volume(THREE, explicit=True)),
        _measure(cfg, "volume_create, 3 nodes, balanced", n, _volume(THREE)),
    ]
    with override_settings(TASKHUB_ASSIGNMENT={"volume_create": "first"}):
        out.append(_measure(cfg, "volume_create, 3 nodes, TASKHUB_ASSIGNMENT first", n, _volume(THREE)))
    slot = _volume(THREE, constraints=SLOT)
    out.append(_measure(cfg, "volume_create, 3 nodes, balanced, 1 slot", n, slot))
    out.append(_measure(cfg, f"the same, {threads} threads at once", n, slot, threads=threads))
    out.append(_measure(cfg, "distribute volume, 30 nodes, node= (explicit)", n, _volume(NODES, explicit=True)))
    out.append(_measure(cfg, "distribute volume, 30 nodes, balanced", n, _volume(NODES)))
    return out


def _row(t: Timing) -> Row:
    how = f"{len(t.seconds)} creates" + (f" from {t.threads} threads" if t.threads > 1 else "")
    detail = (
        f"p50 {t.pct(0.5):.1f} ms, p99 {t.pct(0.99):.1f} ms; {how}; {t.queries} SQL statements per create; {t.check}"
    )
    return Row(SECTION, t.label, f"{t.rate:,.0f} creates/s", detail)


# --- what is created -----------------------------------------------------------------------------

Create = Callable[[int], dict[str, Any]]  # the i-th create's task_create arguments


def _noop(i: int) -> dict[str, Any]:
    return {"task_type": "noop", "task_data": {"node": THREE[0]}}


def _volume(nodes: list[str], *, explicit: bool = False, constraints: dict[str, Any] | None = None) -> Create:
    vtype = "replicate" if len(nodes) <= 3 else "distribute"

    def create(i: int) -> dict[str, Any]:
        data = {
            "cluster": CLUSTER,
            "name": f"v{uuid.uuid4().hex[:20]}",  # one volume name per create: the family refuses a repeat
            "type": vtype,
            "storage_units": [{"node": name} for name in nodes],
        }
        args: dict[str, Any] = {"task_type": "volume_create", "task_data": data}
        if explicit:
            args["node"] = nodes[i % len(nodes)]
        if constraints:
            args["constraints"] = constraints
        return args

    return create


# --- one measurement -----------------------------------------------------------------------------


def _measure(cfg: Config, label: str, n: int, make: Create, *, threads: int = 1) -> Timing:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tasks_app.tasks.services import task_create

    _heartbeat()
    ids: list[str] = []
    lock = threading.Lock()
    seconds: list[float] = []
    errors: list[BaseException] = []

    def one(i: int) -> float:
        task_id = f"{ID_PREFIX}{uuid.uuid4()}"
        with lock:
            ids.append(task_id)
        started = time.perf_counter()
        task_create(task_id=task_id, execute=True, source=SOURCE, **make(i))
        return time.perf_counter() - started

    def worker(first: int, count: int) -> None:
        from django.db import connections

        try:
            took = [one(i) for i in range(first, first + count)]
            with lock:
                seconds.extend(took)
        except BaseException as exc:  # reported after the threads end
            with lock:
                errors.append(exc)
        finally:
            if threads > 1:
                connections.close_all()  # this thread's own connection

    queues_before = _queued()
    try:
        for i in range(10):  # connections, imports, the queues declared
            one(-1 - i)
        started = time.perf_counter()
        if threads == 1:
            worker(0, n)
        else:
            share = [n // threads + (1 if t < n % threads else 0) for t in range(threads)]
            pool = [
                threading.Thread(target=worker, args=(sum(share[:t]), share[t]), name=f"bench-place-{t}")
                for t in range(threads)
            ]
            for t in pool:
                t.start()
            for t in pool:
                t.join()
        wall = time.perf_counter() - started
        if errors:
            raise errors[0]
        with CaptureQueriesContext(connection) as captured:
            one(n)
        check = _check(cfg, ids, _queued() - queues_before)
    finally:
        _delete(cfg, ids)
    return Timing(label, seconds, wall, threads, len(captured.captured_queries), check)


def _check(cfg: Config, ids: list[str], queued: int) -> str:
    """The created rows by node and status, and the runs their queues gained."""
    with connect(cfg.database_url) as conn:
        found = conn.execute(
            "SELECT node, task_status, count(*) FROM global_task WHERE task_id = ANY(%s) GROUP BY 1, 2 ORDER BY 1, 2",
            (ids,),
        ).fetchall()
    pending = {str(node): int(c) for node, status, c in found if status == "pending"}
    other = sum(int(c) for _, status, c in found if status != "pending")
    counts = [pending[name] for name in NODES if name in pending]
    if len(counts) == 1:
        spread = "all on 1 node"
    elif len(counts) <= 3:
        spread = f"{'/'.join(map(str, counts))} on {len(counts)} nodes"
    else:
        spread = f"{min(counts)} to {max(counts)} on each of {len(counts)} nodes"
    # Counted with the 10 warm-up creates and the one whose statements are counted.
    text = f"{sum(pending.values()):,} pending (11 untimed), {spread}; {queued:,} runs queued"
    return text + (f"; {other:,} NOT pending" if other else "")


# --- the nodes and the table ---------------------------------------------------------------------


def _register() -> bool:
    """The nodes, members of the cluster; whether this made the cluster."""
    from tasks_app.fleet.models import Cluster
    from tasks_app.fleet.services import cluster_ensure, node_register

    made = not Cluster.objects.filter(name=CLUSTER).exists()
    cluster = cluster_ensure(name=CLUSTER)
    for name in NODES:
        node_register(cluster=cluster, name=name, capacity={"slots": SLOTS})
    _heartbeat()
    return made


def _heartbeat() -> None:
    """Every node online for placement (its `online` reads last_heartbeat), as their workers' beats would
    keep them: the bench runs no worker."""
    from tasks_app.fleet.models import Node

    Node.objects.filter(name__in=NODES).update(last_heartbeat=datetime.now(UTC), offline_since=None)


def _fill(cfg: Config, rows: int, open_per_node: int) -> int:
    """The finished and unfinished tasks the creates find on the nodes, in one INSERT ... SELECT; then
    ANALYZE, so the planner knows them. Returns how many."""
    from bench.rows import insert_select

    now = int(time.time())
    others = len(NODES) - len(THREE)
    total = rows + others * OTHER_NODE_ROWS + open_per_node * len(NODES)
    finished = rows + others * OTHER_NODE_ROWS
    # The first `rows` on the three nodes in turn, then 1,000 on each other node; then the unfinished ones.
    node = (
        f"CASE WHEN i < {rows} THEN (%s::text[])[1 + i %% 3] "
        f"WHEN i < {finished} THEN (%s::text[])[4 + (i - {rows}) %% {others}] "
        f"ELSE (%s::text[])[1 + (i - {finished}) %% {len(NODES)}] END"
    )
    spread = f"(i::bigint * 2592000 / {max(total, 1)})"  # create times over the last 30 days
    # Each node's k-th unfinished task: pending, received, in_progress in turn; every other one holds a slot.
    k = f"((i - {finished}) / {len(NODES)})"
    unfinished = f"(ARRAY['pending','received','in_progress'])[1 + {k} %% 3]"
    holds = f"i >= {finished} AND {k} %% 2 = 0"
    sql, params = insert_select(
        f"generate_series(0, {total - 1}) AS i",
        {
            "task_id": ("%s || 'fill-' || i", [ID_PREFIX]),
            "task_data": (f"jsonb_build_object('node', {node})", [NODES, NODES, NODES]),
            "task_type": ("'noop'", []),
            "task_status": (
                f"CASE WHEN i >= {finished} THEN {unfinished} WHEN i %% 10 = 9 THEN 'failed' ELSE 'completed' END",
                [],
            ),
            "task_create_timestamp": (f"%s + {spread}", [now - 30 * 86400]),
            "task_update_timestamp": (f"%s + {spread}", [now - 30 * 86400]),
            "node": (node, [NODES, NODES, NODES]),
            "run_id": ("md5('bench-place' || i)::uuid::text", []),
            "dispatched_at": (f"%s + {spread}", [now - 30 * 86400]),
            "created_ns": (f"(%s + {spread}) * 1000000000 + i", [now - 30 * 86400]),
            "constraints": (f"CASE WHEN {holds} THEN %s::jsonb ELSE '{{}}'::jsonb END", ['{"capacity": {"slots": 1}}']),
        },
    )
    with connect(cfg.database_url) as conn:
        conn.execute(sql, params)
        conn.execute("ANALYZE global_task")
    return total


def _delete(cfg: Config, ids: list[str]) -> None:
    if ids:
        with connect(cfg.database_url) as conn:
            conn.execute("DELETE FROM global_task_history WHERE task_id = ANY(%s)", (ids,))
            conn.execute("DELETE FROM global_task WHERE task_id = ANY(%s)", (ids,))


def _remove(cfg: Config) -> None:
    """Every task on the bench nodes (and its history) and the runs queued for them."""
    with connect(cfg.database_url) as conn:
        conn.execute(
            "DELETE FROM global_task_history WHERE task_id IN (SELECT task_id FROM global_task WHERE node = ANY(%s))",
            (NODES,),
        )
        conn.execute("DELETE FROM global_task WHERE node = ANY(%s)", (NODES,))
    _broker().delete(*_queue_keys())


def _unregister(made_cluster: bool) -> None:
    from tasks_app.fleet.models import Cluster, Node

    Node.objects.filter(name__in=NODES).delete()
    if made_cluster:
        Cluster.objects.filter(name=CLUSTER, nodes__isnull=True).delete()


# --- the nodes' queues ---------------------------------------------------------------------------


def _broker() -> Any:
    import redis
    from celery import current_app

    return redis.Redis.from_url(str(current_app.conf.broker_url))


def _queue_keys() -> list[str]:
    """The nodes' queues and kombu's record of each (made by the first publish)."""
    from workers.protocol.queues import node_queue

    return [key for name in NODES for key in (node_queue(name), f"_kombu.binding.{node_queue(name)}")]


def _queued() -> int:
    from workers.protocol.queues import node_queue

    pipe = _broker().pipeline(transaction=False)
    for name in NODES:
        pipe.llen(node_queue(name))
    return sum(int(x) for x in pipe.execute())


# --- EXPLAIN ANALYZE of the balanced rule's queries, read-only -----------------------------------


def explain(names: list[str]) -> str:
    """The plans and times of what placing a task on these nodes reads (the same querysets as
    tasks_app/fleet/selectors.py: node_unfinished_counts, node_reserved, node_last_assigned; Placement.key_node;
    the volume family's in-flight check), in a read-only transaction."""
    from django.db import connection, transaction
    from django.db.models import Count

    from tasks_app.tasks.models import GlobalTask
    from workers.protocol.status import TERMINAL, UNFINISHED

    open_tasks = GlobalTask.objects.filter(node__in=names, task_status__in=UNFINISHED)
    queries: list[tuple[str, Any]] = [
        ("unfinished per node (node_unfinished_counts)", open_tasks.values_list("node").annotate(n=Count("task_id"))),
        (
            "reserved capacity (node_reserved, only for a task that asks for capacity)",
            open_tasks.filter(constraints__has_key="capacity").values_list("node", "constraints"),
        ),
        (
            f"last assigned, {names[0]} (node_last_assigned, one per node)",
            GlobalTask.objects.filter(node=names[0]).order_by("-created_ns").values_list("created_ns")[:1],
        ),
        (
            "latest task of an ordering key (Placement.key_node)",
            GlobalTask.objects.filter(order_key="volume:c:v")
            .exclude(node="")
            .order_by("-created_ns")
            .values_list("node")[:1],
        ),
        (
            "volume in flight (the volume family's check)",
            GlobalTask.objects.filter(task_type="volume_create", task_data__cluster="c", task_data__name="v")
            .exclude(node="")
            .exclude(task_status__in=TERMINAL)
            .values_list("task_id")[:1],
        ),
    ]
    out: list[str] = []
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET TRANSACTION READ ONLY")
        for title, qs in queries:
            sql, params = qs.query.sql_with_params()
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
            out.append(f"-- {title}\n" + "\n".join(str(r[0]) for r in cursor.fetchall()))
    return "\n\n".join(out)


if __name__ == "__main__":  # python -m bench.placement [explain <node> ...]: this section alone
    from bench import config, db
    from bench.report import render

    conf = config.load()
    if sys.argv[1:2] == ["explain"]:
        setup_django(conf)  # no migrate: the database is only read
        print(explain(sys.argv[2:] or THREE))
        sys.exit(0)
    db.ensure_database(conf)
    db.migrate(conf)
    setup_django(conf)
    render(measure(conf), "taskhub placement", f"database {conf.database_name}, Redis {conf.redis_url}")
