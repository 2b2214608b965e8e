"""The experiments. Each one is a function of the suite: it puts a bounded load on the stack through the HTTP
API, injects its fault, undoes it, and returns the audited row (faults/audit.py). Sizes come from Sizes, so
`--quick` runs the same experiments smaller."""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from faults.audit import NodeRecords, Row, audit, tasks
from faults.client import Api, Load, Prober, by_endpoint, executed_body, tally
from faults.infra import PrivatePostgres, PrivateRedis, wait_for
from faults.stack import NODES, WRITERS, Stack
from workers.protocol.status import TERMINAL


@dataclass(frozen=True)
class Sizes:
    tasks: int  # tasks of a load experiment
    rate: float  # creates a second
    outage: float  # seconds a dependency stays down
    settle: float  # seconds an experiment's tasks get to reach a final status after the fault
    tracked: int  # tracked tasks of the update experiments
    poison: int  # poison tasks (beside `tasks // 4` healthy ones)
    soak_minutes: float


QUICK = Sizes(tasks=60, rate=20, outage=5, settle=60, tracked=30, poison=6, soak_minutes=0.5)
FULL = Sizes(tasks=600, rate=30, outage=10, settle=120, tracked=300, poison=30, soak_minutes=3)


@dataclass
class Suite:
    stack: Stack
    redis: PrivateRedis
    postgres: PrivatePostgres | None
    api: Api
    sizes: Sizes
    records: NodeRecords
    probe_task_id: str = ""  # an executed task and a tracked one, for the prober's reads and writes
    probe_tracked_id: str = ""
    rows: list[Row] = field(default_factory=list)

    def log(self, message: str) -> None:
        print(f"  {time.strftime('%H:%M:%S')} {message}", flush=True)


Experiment = Callable[[Suite], Row]


# --- helpers ---------------------------------------------------------------------------------------


def canary(s: Suite, timeout: float = 60.0) -> None:
    """One noop on each node, through the API, until it completes: every process of the path (web, broker,
    node consumers, writers) works again before the next experiment starts."""
    ids = []
    for node in NODES:
        answer, body = s.api.create(executed_body("noop", {"node": node}))
        if answer.status != 200 or not isinstance(body, dict):
            raise RuntimeError(f"canary create on {node} answered {answer.label}")
        ids.append(body["data"]["task_id"])
    wait_for(lambda: sum(t.status == "completed" for t in tasks(ids).values()) == len(ids), "canary tasks", timeout)


def _mixed(i: int) -> dict[str, Any]:
    """Mostly noop, every fifth a short fault_work (so some runs are mid-handler when the fault hits)."""
    node = NODES[i % len(NODES)]
    if i % 5 == 0:
        return executed_body("fault_work", {"node": node, "seconds": 0.3})
    return executed_body("noop", {"node": node})


def _load(s: Suite, make_body: Callable[[int], dict[str, Any]], count: int | None = None) -> Load:
    return Load(s.api, make_body, s.sizes.tasks if count is None else count, s.sizes.rate).start()


def _wait_submitted(load: Load, fraction: float, timeout: float = 120.0) -> None:
    """Until `fraction` of the load has been sent: the fault then hits it mid-run."""
    target = int((load.count or 0) * fraction)
    wait_for(lambda: len(load.submitted) >= target, f"{target} creates", timeout)


def _in_progress(ids: list[str]) -> int:
    return sum(1 for t in tasks(ids).values() if t.status == "in_progress")


def _audit(s: Suite, name: str, load: Load, fault_end: float | None, api: str = "-") -> Row:
    row, _ = audit(
        name, load.submitted, load.accepted, s.records, settle_seconds=s.sizes.settle, fault_end=fault_end, api=api
    )
    if load.refused:
        row.notes.append(f"refused creates: {tally_labels(load.refused.values())}")
    return row


def _served_again(s: Suite, prober: Prober, timeout: float = 60.0) -> str:
    """Right after a dependency is back: how long until one round of the prober's calls is answered with
    no 5xx and no failed connection. A server that is slow to recover shows here, not only in the tasks'
    recovery (the load retries its creates)."""
    back = time.monotonic()
    while time.monotonic() - back < timeout:
        answers = [s.api.request(method, path, body, endpoint=e)[0] for method, path, body, e in prober.calls]
        if all(a.status is not None and a.status < 500 for a in answers):
            return f"every endpoint answered again {time.monotonic() - back:.1f} s after it was back"
        time.sleep(0.1)
    return f"an endpoint still failed {timeout:.0f} s after it was back"


def tally_labels(labels: Any) -> str:
    return ", ".join(f"{label} x{n}" for label, n in Counter(labels).most_common())


def _tracked(s: Suite, n: int) -> list[str]:
    """n tracked tasks (records their callers drive), created through POST /task."""
    ids = []
    for _ in range(n):
        tid = str(uuid.uuid4())
        answer, _ = s.api.create({"task_id": tid, "task_type": "fault_tracked", "task_data": {"n": 1}})
        if answer.status != 200:
            raise RuntimeError(f"creating a tracked task answered {answer.label}")
        ids.append(tid)
    return ids


# --- the experiments -------------------------------------------------------------------------------


def node_kill(s: Suite) -> Row:
    """SIGKILL node1 while tasks run on it; start it again 3 s later."""
    load = _load(s, _mixed)
    _wait_submitted(load, 0.4)
    s.stack.sigkill("node1")
    s.log("node1 SIGKILLed")
    time.sleep(3)
    fault_end = time.time()
    s.stack.restart("node1")
    load.join()
    return _audit(s, "node SIGKILL + restart", load, fault_end)


def writer_kill(s: Suite) -> Row:
    """SIGKILL both writers, a second apart, mid-load; start them again 3 s later."""
    load = _load(s, _mixed)
    _wait_submitted(load, 0.3)
    start = time.time()
    s.stack.sigkill("writer1")
    time.sleep(1)
    s.stack.sigkill("writer2")
    s.log("writers SIGKILLed")
    time.sleep(3)
    fault_end = time.time()
    for name in WRITERS:
        s.stack.restart(name, wait=False)
    for name in WRITERS:
        s.stack.wait_ready(name)
    load.join()
    return _audit(s, "writer SIGKILL x2 + restart", load, fault_end, tally(s.api.between(start, fault_end)))


def redis_kill(s: Suite) -> Row:
    """SIGKILL Redis (AOF everysec) under load; start it again after the outage."""
    load = _load(s, _mixed)
    _wait_submitted(load, 0.3)
    prober = Prober(s.api, s.probe_task_id, s.probe_tracked_id)
    prober.start()
    start = time.time()
    s.redis.sigkill()
    s.log(f"Redis SIGKILLed for {s.sizes.outage:g} s")
    time.sleep(s.sizes.outage)
    fault_end = time.time()
    s.redis.start()
    prober.stop()
    served = _served_again(s, prober)
    load.join()
    answers = s.api.between(start, fault_end)
    row = _audit(s, f"Redis SIGKILL {s.sizes.outage:g} s under load (AOF)", load, fault_end, tally(answers))
    row.notes.append(f"answers by endpoint: {by_endpoint(answers)}; {served}")
    return row


def redis_shutdown(s: Suite) -> Row:
    """A clean Redis SHUTDOWN while 9 tasks run (6 finish, 3 fail, after the outage); restart after 6 s."""
    # On each node: two that finish and one that fails, all three running when Redis goes. Each runs 10 s,
    # so on a slow, shared machine all nine are still running together when the last one starts.
    bodies = [
        executed_body("fault_poison" if i % 3 == 2 else "fault_work", {"node": NODES[i // 3], "seconds": 10})
        for i in range(9)
    ]
    load = Load(s.api, lambda i: bodies[i], 9, rate=50, threads=3).start()
    load.join()
    wait_for(
        lambda: _in_progress(load.submitted) == 9, "9 tasks in_progress", 60,
        state=lambda: tally_labels(f"{t.status} on {t.node}" for t in tasks(load.submitted).values()),
    )  # fmt: skip
    prober = Prober(s.api, s.probe_task_id, s.probe_tracked_id)
    prober.start()
    start = time.time()
    s.redis.shutdown()
    s.log("Redis shut down while 9 tasks run")
    time.sleep(6)
    fault_end = time.time()
    s.redis.start()
    prober.stop()
    served = _served_again(s, prober)
    answers = s.api.between(start, fault_end)
    row = _audit(s, "Redis SHUTDOWN while 9 run, back after 6 s", load, fault_end, tally(answers))
    _expect(row, load.submitted, _poison_fails(bodies))
    row.notes.append(f"answers by endpoint: {by_endpoint(answers)}; {served}")
    return row


def acked_updates(s: Suite) -> Row:
    """Writers stopped, /task_update acknowledged for tracked tasks, Redis SIGKILLed at once after the last
    200 and started again (AOF everysec), then the writers: every acknowledged update must be applied."""
    ids = _tracked(s, s.sizes.tracked)
    for name in WRITERS:
        s.stack.sigkill(name)
    acked = [tid for tid in ids if s.api.task_update(tid, "completed").status == 200]
    s.redis.sigkill()
    fault_end = time.time()
    s.redis.start()
    for name in WRITERS:
        s.stack.restart(name)
    # Audited: the acknowledged ones (an unacknowledged update may or may not have reached Redis).
    row, found = audit(
        "acked /task_update, Redis SIGKILL (AOF)", acked, set(acked), s.records, settle_seconds=s.sizes.settle,
        fault_end=fault_end,
    )  # fmt: skip
    not_applied = [tid for tid in acked if found.get(tid) is None or found[tid].status != "completed"]
    row.lost += len(not_applied)
    row.notes.append(f"{len(acked)} updates acknowledged, {len(acked) - len(not_applied)} applied")
    return row


def pg_stop(s: Suite) -> Row:
    """`pg_ctl -m immediate stop` under load; PostgreSQL back after the outage. Records every answer."""
    if s.postgres is None:
        return Row("PostgreSQL stop", 0, notes=["skipped: the run used SQLite, not PostgreSQL"])
    load = _load(s, _mixed)
    _wait_submitted(load, 0.3)
    prober = Prober(s.api, s.probe_task_id, s.probe_tracked_id)
    prober.start()
    start = time.time()
    s.postgres.stop_immediate()
    s.log(f"PostgreSQL stopped (immediate) for {s.sizes.outage:g} s")
    time.sleep(s.sizes.outage)
    fault_end = time.time()
    s.postgres.start()
    prober.stop()
    served = _served_again(s, prober)
    load.join()
    answers = s.api.between(start, fault_end)
    row = _audit(s, f"PostgreSQL immediate stop {s.sizes.outage:g} s", load, fault_end, tally(answers))
    row.notes.append(f"answers by endpoint: {by_endpoint(answers)}; {served}")
    return row


def dead_node(s: Suite) -> Row:
    """SIGKILL node3 with tasks running and queued, and leave it dead: the dead-node sweep must end its
    tasks (failed, "node went offline"). node3 then starts again, and nothing of its old runs may land."""
    bodies = [executed_body("fault_work", {"node": "node3", "seconds": 3}) for _ in range(12)]
    load = Load(s.api, lambda i: bodies[i], len(bodies), rate=50, threads=3).start()
    load.join()
    wait_for(lambda: _in_progress(load.submitted) >= 2, "node3 running tasks", 30)
    s.stack.sigkill("node3")
    fault_start = time.time()
    s.log("node3 SIGKILLed, left dead")
    # Bounded: the node goes offline after TASKHUB_NODE_OFFLINE_SECONDS, and the sweep runs every few seconds.
    deadline = time.monotonic() + s.sizes.settle
    while time.monotonic() < deadline and not all(t.status in TERMINAL for t in tasks(load.submitted).values()):
        time.sleep(0.5)
    s.stack.restart("node3")
    time.sleep(5)  # what the restarted node3 sends of its old runs has landed, or never will
    row = _audit(s, "dead node (SIGKILL, not restarted)", load, fault_start)
    statuses = Counter(t.status for t in tasks(load.submitted).values())
    row.notes.append("ended: " + ", ".join(f"{n} {st}" for st, n in statuses.most_common()))
    return row


def poison(s: Suite) -> Row:
    """Handlers that always fail (three ways), among healthy tasks: each poison task ends failed, the rest
    completed, and no node dies of it."""
    healthy = max(10, s.sizes.tasks // 4)
    kinds = ("error", "recoverable", "exception")
    bodies = [
        executed_body("fault_poison", {"node": NODES[i % 3], "kind": kinds[i % 3]}) for i in range(s.sizes.poison)
    ]
    bodies += [executed_body("noop", {"node": NODES[i % 3]}) for i in range(healthy)]
    random.shuffle(bodies)
    load = Load(s.api, lambda i: bodies[i], len(bodies), s.sizes.rate).start()
    load.join()
    row = _audit(s, "poison tasks", load, None)
    _expect(row, load.submitted, _poison_fails(bodies))
    dead = [name for name in NODES if not s.stack.roles[name].running]
    row.notes.append(f"nodes that died: {', '.join(dead) or 'none'}")
    return row


def updates(s: Suite) -> Row:
    """Duplicate and out-of-order POST /task_update on tracked tasks, from 8 threads at once: each task's
    received, in_progress and completed twice each, shuffled. Every task must end completed, no history
    row may go back, and a refused update is a 409."""
    ids = _tracked(s, s.sizes.tracked)
    sends = [(tid, st) for tid in ids for st in ("received", "in_progress", "completed") * 2]
    random.shuffle(sends)
    start = time.time()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda send: (send, s.api.task_update(*send)), sends))
    end = time.time()
    row, found = audit(
        "duplicate + out-of-order /task_update", ids, set(ids), s.records, settle_seconds=s.sizes.settle,
        fault_end=None, api=tally(s.api.between(start, end)),
    )  # fmt: skip
    acked_completed = {tid for (tid, st), a in answers if st == "completed" and a.status == 200}
    row.lost += sum(1 for tid in acked_completed if found.get(tid) is None or found[tid].status != "completed")
    unexpected = [a.label for _send, a in answers if a.status not in (200, 409)]
    if unexpected:
        row.notes.append(f"unexpected answers: {tally_labels(unexpected)}")
    return row


def soak(s: Suite, minutes: float | None = None) -> Row:
    """Steady load while a node, a writer, the scheduler or the web (gunicorn, master and workers) is
    SIGKILLed every 5-15 s and started again 1-4 s later: each in turn, in a new random order each round."""
    minutes = s.sizes.soak_minutes if minutes is None else minutes
    victims = [*NODES, *WRITERS, "scheduler", "web"]

    def body(i: int) -> dict[str, Any]:
        node = NODES[i % 3]
        if i % 50 == 0:
            return executed_body("fault_poison", {"node": node})
        return (
            executed_body("fault_work", {"node": node, "seconds": 0.5})
            if i % 10 == 0
            else executed_body("noop", {"node": node})
        )

    load = Load(s.api, body, None, s.sizes.rate).start()
    start = time.time()
    end = start + minutes * 60
    kills: Counter[str] = Counter()
    last_restart = start
    order: list[str] = []
    while time.time() + 5 < end:
        time.sleep(random.uniform(5, 15))
        if time.time() >= end:
            break
        if not order:
            order = random.sample(victims, len(victims))
        victim = order.pop()
        s.stack.sigkill(victim)
        kills[victim] += 1
        time.sleep(random.uniform(1, 4))
        last_restart = time.time()
        s.stack.restart(victim)
        s.log(f"soak: {victim} SIGKILLed and restarted ({sum(kills.values())} kills)")
    time.sleep(max(0.0, end - time.time()))
    load.stop()
    load.join()
    answered = tally(s.api.between(start, time.time()), skip_ok=True)
    row = _audit(s, f"soak {minutes:g} min, random SIGKILLs", load, last_restart, answered)
    row.notes.append("kills: " + ", ".join(f"{name} x{n}" for name, n in sorted(kills.items())))
    return row


def _poison_fails(bodies: list[dict[str, Any]]) -> dict[str, str]:
    return {b["task_id"]: "failed" if b["task_type"] == "fault_poison" else "completed" for b in bodies}


def _expect(row: Row, ids: list[str], wanted: dict[str, str]) -> None:
    """Note tasks that ended in a final status other than the one their type must end in."""
    wrong = Counter(
        f"{wanted[t.task_id]} expected, {t.status}"
        for t in tasks(ids).values()
        if t.status in TERMINAL and t.status != wanted.get(t.task_id, t.status)
    )
    if wrong:
        row.notes.append("wrong ends: " + ", ".join(f"{n} {what}" for what, n in wrong.most_common()))


QUICK_RUN: tuple[Experiment, ...] = (
    node_kill, writer_kill, poison, updates, acked_updates, redis_kill, redis_shutdown, pg_stop,
)  # fmt: skip
FULL_RUN: tuple[Experiment, ...] = (
    node_kill, writer_kill, poison, updates, acked_updates, redis_kill, redis_shutdown, pg_stop, dead_node, soak,
)  # fmt: skip
BY_NAME: dict[str, Experiment] = {fn.__name__: fn for fn in FULL_RUN}
