"""Bulk create: tasks/s of tasks_app.tasks.bulk.task_create_many in this process, and of
POST /api/v1/tasks/bulk/ over HTTP through gunicorn (the production server, cfg.workers sync workers).

Three measurements, each BENCH_BULK_CALLS calls of BENCH_BULK_SIZE tasks (default 20 x 1,000):
- in process, tracked tasks (task_type bench_bulk_tracked): validation of each item as a single create,
  one transaction, every row and its history row in one statement;
- in process, executed `noop` tasks for node `benchnode`: the same, plus each task's node and run, and
  their runs published to the queue node.benchnode in one round trip after the commit (no worker runs
  them here: the queue's length is checked, then the messages are removed);
- over HTTP: the tracked calls as JSON bodies, from cfg.workers client threads.

Each call is timed from the call to its return (over HTTP: request to response), and the rate is the
tasks of all calls over the calls' summed time (over HTTP: over the wall time of the whole run, since
calls overlap). Afterwards the rows and history rows are counted, then deleted by task_id; the node,
its cluster and the HTTP account only if this module made them.
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from bench.config import Config, child_env, setup_django
from bench.db import connect
from bench.report import Row

SECTION = "e"  # bench/__main__.py: (e) bulk create
TARGET_RATE = 10_000
TARGET = f"≥ {TARGET_RATE:,} tasks/s"
TRACKED_TYPE = "bench_bulk_tracked"
EXECUTED_TYPE = "noop"
NODE = "benchnode"
CLUSTER = "benchcluster"
SOURCE = "bench-bulk"
HTTP_USER = "bench-bulk-service"
ID_PREFIX = "bench-bulk-"
PATH = "/api/v1/tasks/bulk/"


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


@dataclass(frozen=True)
class Throughput:
    label: str
    tasks: int
    seconds: float  # the calls' summed time (in process) or the run's wall time (over HTTP)
    call_seconds: list[float]
    cpu_seconds: float  # this process's CPU over the run (in process only; 0 over HTTP)
    check: str

    @property
    def rate(self) -> float:
        return self.tasks / self.seconds if self.seconds else 0.0


def measure(cfg: Config) -> list[Row]:
    """Run the three measurements; one Row each, with the target and whether it was met. Cleans up its
    rows (by task_id), the messages it queued, and whatever node, cluster or account it made."""
    _ensure_django(cfg)
    calls, size = _int("BENCH_BULK_CALLS", 20), _int("BENCH_BULK_SIZE", 1000)
    print(f"bulk create: {calls} calls of {size:,} tasks, in process and over HTTP ...", flush=True)
    results: list[Throughput] = []
    made = _ensure_node()
    try:
        results.append(_in_process(cfg, "bulk create in process, tracked", calls, size, executed=False))
        executed = f"bulk create in process, executed noop for {NODE}"
        results.append(_in_process(cfg, executed, calls, size, executed=True))
    finally:
        _remove_node(made)
    results.append(_over_http(cfg, calls, size))
    return [_row(r, size) for r in results]


def _row(t: Throughput, size: int) -> Row:
    median_ms = statistics.median(t.call_seconds) * 1000 if t.call_seconds else 0.0
    detail = f"{len(t.call_seconds)} x {size:,}; median call {median_ms:,.0f} ms"
    if t.cpu_seconds:
        detail += f", CPU {t.cpu_seconds / t.tasks * 1e6:,.0f} µs/task (this process)"
    return Row(SECTION, t.label, f"{t.rate:,.0f} tasks/s", f"{detail}; {t.check}", TARGET, t.rate >= TARGET_RATE)


def _ensure_django(cfg: Config) -> None:
    from django.apps import apps

    if not apps.ready:
        setup_django(cfg)


# --- in process ------------------------------------------------------------------------------------


def _items(n: int, *, executed: bool, call: int) -> list[Any]:
    from tasks_app.tasks.bulk import NewTaskSpec

    if executed:
        return [
            NewTaskSpec(
                task_type=EXECUTED_TYPE, task_id=f"{ID_PREFIX}{uuid.uuid4()}", task_data={"node": NODE}, execute=True
            )
            for _ in range(n)
        ]
    return [
        NewTaskSpec(task_type=TRACKED_TYPE, task_id=f"{ID_PREFIX}{uuid.uuid4()}", task_data={"call": call, "step": i})
        for i in range(n)
    ]


def _in_process(cfg: Config, label: str, calls: int, size: int, *, executed: bool) -> Throughput:
    from tasks_app.tasks.bulk import task_create_many

    queue_before = _queue_length() if executed else 0
    binding_before = _broker().exists(_binding_key())
    warmup = _items(10, executed=executed, call=-1)  # connections, imports, the broker's queue declared
    ids: list[str] = [str(i.task_id) for i in warmup]
    times: list[float] = []
    cpu = 0.0
    failed = 0
    try:
        task_create_many(items=warmup, source=SOURCE)
        for call in range(calls):
            items = _items(size, executed=executed, call=call)
            ids += [str(i.task_id) for i in items]
            started, cpu_started = time.perf_counter(), time.process_time()
            results = task_create_many(items=items, source=SOURCE)
            times.append(time.perf_counter() - started)
            cpu += time.process_time() - cpu_started
            failed += sum(1 for r in results if not r.created)
        check = _check(cfg, ids[len(warmup) :], failed)
        if executed:
            queued = _queue_length() - queue_before - len(warmup)
            check += f", {queued:,} runs queued"
    finally:
        _delete(cfg, ids)
        if executed:
            _drop_queued(queue_before)
            if not binding_before:
                _broker().delete(_binding_key())  # kombu's record of the queue, made by the first publish
    return Throughput(label, calls * size - failed, sum(times), times, cpu, check)


def _check(cfg: Config, ids: list[str], failed: int) -> str:
    with connect(cfg.database_url) as conn:
        tasks = conn.execute("SELECT count(*) FROM global_task WHERE task_id = ANY(%s)", (ids,)).fetchone()
        history = conn.execute("SELECT count(*) FROM global_task_history WHERE task_id = ANY(%s)", (ids,)).fetchone()
    text = f"{tasks[0] if tasks else 0:,} rows, {history[0] if history else 0:,} history rows"
    return text + (f", {failed:,} items NOT created" if failed else "")


def _delete(cfg: Config, ids: list[str]) -> None:
    if not ids:
        return
    with connect(cfg.database_url) as conn:
        conn.execute("DELETE FROM global_task_history WHERE task_id = ANY(%s)", (ids,))
        conn.execute("DELETE FROM global_task WHERE task_id = ANY(%s)", (ids,))


def _broker() -> Any:
    import redis
    from celery import current_app

    return redis.Redis.from_url(str(current_app.conf.broker_url))


def _binding_key() -> str:
    from workers.protocol.queues import node_queue

    return f"_kombu.binding.{node_queue(NODE)}"


def _queue_length() -> int:
    from workers.protocol.queues import node_queue

    return int(_broker().llen(node_queue(NODE)))


def _drop_queued(before: int) -> None:
    """Remove the messages this run queued: LPUSH puts them at the head, so keep only the `before`
    oldest (a worker takes from the tail)."""
    from workers.protocol.queues import node_queue

    client = _broker()
    if before:
        client.ltrim(node_queue(NODE), -before, -1)
    else:
        client.delete(node_queue(NODE))


def _ensure_node() -> tuple[bool, bool]:
    """Register benchnode (and its cluster) unless they exist; which of the two this made."""
    from tasks_app.fleet.services import cluster_ensure, node_register
    from tasks_app.models import Cluster, Node

    made_cluster = not Cluster.objects.filter(name=CLUSTER).exists()
    made_node = not Node.objects.filter(name=NODE).exists()
    if made_node:
        node_register(cluster=cluster_ensure(name=CLUSTER), name=NODE)
    return made_node, made_cluster


def _remove_node(made: tuple[bool, bool]) -> None:
    from tasks_app.models import Cluster, Node

    made_node, made_cluster = made
    if made_node:
        Node.objects.filter(name=NODE).delete()
    if made_cluster:
        Cluster.objects.filter(name=CLUSTER, nodes__isnull=True).delete()


# --- over HTTP -------------------------------------------------------------------------------------


def _over_http(cfg: Config, calls: int, size: int) -> Throughput:
    from bench.procs import Server

    token, made_user = _service_token()
    ids: list[str] = []
    try:
        with Server("bulk", child_env(cfg), cfg.workers, "/healthz") as server:
            bodies = []
            for call in range(calls):
                tasks: list[dict[str, Any]] = [
                    {"task_id": f"{ID_PREFIX}{uuid.uuid4()}", "task_type": TRACKED_TYPE, "task_data": {"call": call}}
                    for _ in range(size)
                ]
                ids += [str(t["task_id"]) for t in tasks]
                bodies.append(json.dumps({"tasks": tasks}).encode())
            _post(server.host, server.port, token, _warmup_body())  # connections, imports, the token's user
            wall, times, failed = _post_all(server.host, server.port, token, bodies, threads=max(1, cfg.workers))
        check = _check(cfg, ids, failed)
    finally:
        _delete(cfg, ids)
        _delete_warmup(cfg)
        _remove_user(made_user)
    return Throughput(
        f"bulk create over HTTP, tracked ({cfg.workers} gunicorn workers)", len(ids) - failed, wall, times, 0.0, check
    )


def _warmup_body() -> bytes:
    return json.dumps({"tasks": [{"task_id": f"{ID_PREFIX}warmup", "task_type": TRACKED_TYPE}]}).encode()


def _delete_warmup(cfg: Config) -> None:
    _delete(cfg, [f"{ID_PREFIX}warmup"])


def _post(host: str, port: int, token: str, body: bytes) -> tuple[float, int]:
    """One POST; (seconds, items not created)."""
    conn = http.client.HTTPConnection(host, port, timeout=120)
    try:
        started = time.perf_counter()
        conn.request(
            "POST", PATH, body=body, headers={"Content-Type": "application/json", "Authorization": f"Token {token}"}
        )
        resp = conn.getresponse()
        raw = resp.read()
        seconds = time.perf_counter() - started
    finally:
        conn.close()
    if resp.status not in (200, 201):
        raise RuntimeError(f"POST {PATH} answered {resp.status}: {raw[:500]!r}")
    answer = json.loads(raw)
    return seconds, int(answer.get("failed", 0)) + int(answer.get("existing", 0))


def _post_all(host: str, port: int, token: str, bodies: list[bytes], threads: int) -> tuple[float, list[float], int]:
    lock = threading.Lock()
    todo = list(bodies)
    times: list[float] = []
    failed = [0]
    errors: list[BaseException] = []

    def worker() -> None:
        while True:
            with lock:
                if not todo or errors:
                    return
                body = todo.pop()
            try:
                seconds, bad = _post(host, port, token, body)
            except BaseException as exc:  # reported after the threads end
                with lock:
                    errors.append(exc)
                return
            with lock:
                times.append(seconds)
                failed[0] += bad

    started = time.perf_counter()
    pool = [threading.Thread(target=worker, name=f"bench-bulk-{i}") for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    wall = time.perf_counter() - started
    if errors:
        raise errors[0]
    return wall, times, failed[0]


def _service_token() -> tuple[str, bool]:
    """A service account's token (services may create tasks, README "Access control")."""
    from django.contrib.auth import get_user_model

    from tasks_app.ops.accounts import service_account_ensure, token_issue

    made = not get_user_model().objects.filter(username=HTTP_USER).exists()
    user = service_account_ensure(name=HTTP_USER)
    return token_issue(user=user), made


def _remove_user(made: bool) -> None:
    from django.contrib.auth import get_user_model

    if made:
        get_user_model().objects.filter(username=HTTP_USER).delete()


if __name__ == "__main__":  # python -m bench.bulk_create: this section alone
    from bench import config, db
    from bench.report import render

    conf = config.load()
    db.ensure_database(conf)
    db.migrate(conf)
    setup_django(conf)
    rows = measure(conf)
    render(rows, "taskhub bulk create", f"database {conf.database_name}, Redis {conf.redis_url}")
