"""Getting executed tasks to their node: validation and assignment at create time, publishing a run
after commit, the sweep that publishes whatever a crash or a broker outage left unpublished, and
telling a node that a run must stop."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import current_app
from django.conf import settings
from django.db.models import Exists, OuterRef, Q, QuerySet
from kombu.utils import json as kombu_json

from tasks_app.errors import InvalidInput
from tasks_app.families import registry as families
from tasks_app.fleet.models import Node
from tasks_app.fleet.placement import Placement, choose, parse_constraints, rule_for
from tasks_app.ops.breaker import is_outage, redis_breaker, server_of
from tasks_app.tasks.models import GlobalTask, TaskStatusChange, now_ts
from tasks_app.tasks.selectors import chunked, order_key_blockers
from workers.protocol import run_end, specs
from workers.protocol.errors import PayloadError
from workers.protocol.messages import ExecuteKwargs
from workers.protocol.payload import NAME_RE
from workers.protocol.queues import EXECUTE_TASK, TASK_ID_HEADER, node_queue
from workers.protocol.status import Status

log = logging.getLogger(__name__)
_KWARGS_REPR_MAX = 1024  # Celery's own bound (Task.kwargsrepr_maxsize)
# kombu's JSON (what its Redis transport writes a message with); celery-types' stub of it is wrong.
_kombu_dumps: Callable[[Any], str] = kombu_json.dumps  # type: ignore[assignment]


@dataclass(frozen=True)
class Prepared:
    task_data: dict[str, Any]
    node: str = ""
    order_key: str = ""
    pull: bool = False  # its node fetches its tasks itself: nothing is published to it
    constraints: dict[str, Any] = field(default_factory=dict)
    placement: dict[str, Any] = field(default_factory=dict)  # why it runs on `node` (placement.Choice.record)
    unschedulable: str = ""  # no candidate may take it: it is stored failed with this reason

    @property
    def publish_on_commit(self) -> bool:
        """Whether the create can publish its run straight after its commit, from what it inserted (no
        read back): an executed task for a push node with no ordering key to wait for."""
        return bool(self.node) and not self.pull and not self.order_key and not self.unschedulable


def executable(task_type: str) -> bool:
    return specs.get(task_type) is not None


def prepare(
    *,
    task_type: str,
    task_data: dict[str, Any],
    node: str | None,
    task_id: str,
    constraints: Any = None,
    placement: Placement | None = None,
) -> Prepared:
    """Validate an executed task's payload, run its family's create-time checks, and place it
    (tasks_app/fleet/placement.py): every participant, and the node it names, must be registered; the
    node is the one it names, else the node of the earlier tasks of its ordering key, else its type's
    rule, among the candidates that may take it. If none may, the Prepared says why (unschedulable).
    The tasks of one request (a bulk create) share a `placement`; a single create gets a fresh one."""
    placement = placement if placement is not None else Placement()
    spec = specs.get(task_type)
    if spec is None:
        raise InvalidInput(
            f"task_type: {task_type!r} is not an executable type; known types: {', '.join(specs.known())}"
        )
    if node and not NAME_RE.fullmatch(node):
        raise InvalidInput("node: must be a node name of 1-64 letters, digits, '.', '_' or '-'")
    wanted = parse_constraints(constraints)
    try:
        data = spec.validate(dict(task_data))
    except PayloadError as exc:
        raise InvalidInput(f"task_data.{exc.field}: {exc.message}") from exc
    data = families.check(task_type, task_id, data)
    participants = spec.participants(data)
    if node and participants and node not in participants:
        raise InvalidInput(f"node: {node!r} does not take part in this task; choose one of {', '.join(participants)}")
    key = spec.order_key(data)
    if not node and rule_for(task_type) == "explicit":
        raise InvalidInput(f"node: {task_type} tasks are assigned explicitly; name the node to run on")
    # A type with no participants of its own runs where the earlier tasks of its ordering key ran.
    following = placement.key_node(key) if key and not node and not participants else ""
    candidates = [node] if node else (participants or ([following] if following else []))
    if not candidates:
        raise InvalidInput(f"node: a {task_type} task must name the node to run on")
    pull = _require_registered(candidates, participants, explicit=bool(node), placement=placement)
    choice = choose(
        task_type=task_type,
        candidates=candidates,
        constraints=wanted,
        placement=placement,
        explicit=bool(node),
        key=key,
    )
    if choice.unschedulable:
        # Stored failed at once, on the node it would have run on had it been able (it is executed work).
        return Prepared(data, candidates[0], key, False, wanted, choice.record, choice.unschedulable)
    return Prepared(data, choice.node, key, pull[choice.node], wanted, choice.record)


def _require_registered(
    candidates: list[str], participants: list[str], *, explicit: bool, placement: Placement
) -> dict[str, bool]:
    """A task for a node nobody registered would wait forever: refuse it now. Returns, for each
    candidate, whether it pulls its tasks (read in the same query)."""
    known = placement.nodes([*candidates, *participants])
    missing = [n for n, info in known.items() if info is None]
    if missing:
        field_name = "node" if explicit and missing[0] == candidates[0] else "task_data"
        raise InvalidInput(
            f"{field_name}: node {missing[0]!r} is not registered; register it first (POST /api/v1/nodes/)"
        )
    return {n: bool((info := known[n]) and info.transport == Node.Transport.PULL) for n in candidates}


def publish(task_id: str) -> bool:
    """Publish the current run of one pending task to its node's queue. Safe to call twice: the node
    runs a run once. A task waits while another task of its ordering key is before it and unfinished,
    or is running; publish_next releases it."""
    return publish_many([task_id]) == 1


# What a run's message is made of (and what publish() checks before it sends one).
_RUN_FIELDS = ("task_type", "task_data", "node", "attempts", "order_key", "created_ns", "run_id")


def _pull_nodes() -> QuerySet[Node, str]:
    """Names of the nodes that fetch their tasks themselves: nothing is published to them."""
    return Node.objects.filter(transport=Node.Transport.PULL).values_list("name", flat=True)


def publish_created(task: GlobalTask) -> bool:
    """Publish the first run of a task this process has just created and committed (Prepared.
    publish_on_commit), from the row it inserted: no read back, and dispatched_at was written by the
    insert itself. A publish that fails clears it again, so that the sweep publishes the task within
    TASKHUB_DISPATCH_GRACE_SECONDS; a process that dies before this runs leaves it to the sweep's
    TASKHUB_REDISPATCH_SECONDS."""
    return publish_created_many([task]) == 1


def publish_created_many(tasks: Sequence[GlobalTask]) -> int:
    """publish_created() for tasks created together (a bulk create): their runs sent in one round trip
    to the broker, in creation order. If that fails, none counts as sent, and their dispatched_at is
    cleared for the sweep. Returns how many were sent."""
    rows = [{"task_id": t.task_id, **{f: getattr(t, f) for f in _RUN_FIELDS}} for t in tasks]
    if _send_runs(rows, record=False):
        return len(rows)
    for part in chunked(rows):
        GlobalTask.objects.filter(
            pk__in=[r["task_id"] for r in part], run_id__in=[r["run_id"] for r in part], task_status=Status.PENDING
        ).update(dispatched_at=None)
    return 0


def publish_many(task_ids: Sequence[str]) -> int:
    """publish() for several tasks (one, or a bulk create's): those still pending, for a node that does
    not pull, and whose ordering key lets them run now, read in a few queries and sent in one round trip
    to the broker, in creation order. Returns how many were sent."""
    rows: list[dict[str, Any]] = []
    for chunk in chunked(list(task_ids)):
        found = GlobalTask.objects.filter(pk__in=chunk, task_status=Status.PENDING).exclude(node="")
        rows += [dict(r) for r in found.values("task_id", *_RUN_FIELDS)]
    pull = set(_pull_nodes().filter(name__in={r["node"] for r in rows}))
    rows = sorted((r for r in rows if r["node"] not in pull), key=lambda r: (r["created_ns"], r["task_id"]))
    # Of one ordering key's tasks here, only the first can be its turn (the others wait for it), and only
    # if nothing before it waits; publish_next sends the next one when it ends.
    first: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["order_key"]:
            first.setdefault(r["order_key"], r)
    blocked = {
        key
        for key, r in first.items()
        if order_key_blockers(task_id=r["task_id"], order_key=key, created_ns=r["created_ns"]).exists()
    }
    due = [r for r in rows if not r["order_key"] or (first[r["order_key"]] is r and r["order_key"] not in blocked)]
    return len(_send_runs(due)) if due else 0


def _send_run(task_id: str, row: dict[str, Any], *, record: bool = True) -> bool:
    return bool(_send_runs([{**row, "task_id": task_id}], record=record))


def _send_runs(rows: list[dict[str, Any]], *, record: bool = True) -> list[str]:
    """Send each row's run to its node's queue, all in one round trip to the broker; the task ids sent
    (all or none). `record`: set their dispatched_at (else the caller's insert did)."""
    first = rows[0]
    # A broker that failed moments ago is not tried again until the breaker's wait is over: an executed
    # create commits either way, and must not pay the broker's timeout on every request of an outage.
    broker = server_of(str(current_app.conf.broker_url))
    if not redis_breaker.allows(broker):
        log.info(
            "%s not published to %s: the broker failed moments ago (the sweep will retry)", _which(rows), first["node"]
        )
        return []
    try:
        # celery-types declares the producer's context without __enter__: typed as Any here.
        acquired: Any = current_app.producer_or_acquire()
        declared: set[str] = set()
        with acquired as producer, _one_round_trip(producer.channel, len(rows)):
            for row in rows:
                kwargs: ExecuteKwargs = {
                    "task_id": row["task_id"],
                    "run_id": row["run_id"],
                    "task_type": row["task_type"],
                    "task_data": row["task_data"],
                    "node": row["node"],
                    "attempt": row["attempts"],
                }
                # The Celery id is the run id, so a cancel revokes exactly this run. One attempt
                # (retry=False, and the server's broker settings bound it: taskhub/settings.py): the
                # sweep is the retry.
                current_app.send_task(
                    EXECUTE_TASK,
                    task_id=row["run_id"],
                    kwargs=dict(kwargs),
                    headers={TASK_ID_HEADER: row["task_id"]},
                    retry=False,
                    producer=producer,
                    # What logs and Flower show of the arguments. Celery's own (saferepr) cost more than
                    # the rest of the publish together; JSON is as readable, and as bounded.
                    argsrepr="()",
                    kwargsrepr=json.dumps(kwargs, default=str)[:_KWARGS_REPR_MAX],
                    # The node's queue declared once per batch (kombu would copy and bind it again for
                    # every message only to find it cached); a queue needs no declaring to be sent to.
                    declare=None if row["node"] not in declared else [],
                )
                declared.add(row["node"])
    except Exception as exc:  # kombu raises many kinds; any of them means "not published"
        if is_outage(exc):
            redis_breaker.failed(broker)
        log.warning("publishing %s to %s failed (the sweep will retry): %s", _which(rows), first["node"], exc)
        return []
    redis_breaker.succeeded(broker)
    if record:
        now = now_ts()
        for part in chunked(rows):
            # Run ids are unique, so "task_id in these and run_id in these" is each task's own pair.
            GlobalTask.objects.filter(
                pk__in=[r["task_id"] for r in part], run_id__in=[r["run_id"] for r in part]
            ).update(dispatched_at=now)
    return [str(r["task_id"]) for r in rows]


def _which(rows: list[dict[str, Any]]) -> str:
    return f"task {rows[0]['task_id']}" if len(rows) == 1 else f"{len(rows)} tasks (task {rows[0]['task_id']} first)"


@contextmanager
def _one_round_trip(channel: Any, messages: int) -> Iterator[None]:
    """Messages published on kombu's Redis channel inside the block go out in one pipeline when it ends,
    instead of one LPUSH (one round trip) each. The channel's _put, the hook through which each kombu
    virtual transport delivers a message, is replaced for the block by one that holds them: the message
    and its queue are kombu's own, only the delivery is batched. Nothing is pushed if the block raises.
    Any other transport publishes one by one, as it would anyway, and so does a single message (a round
    trip either way): the common path, one create's publish, stays kombu's own."""
    if messages < 2 or not all(hasattr(channel, a) for a in ("_q_for_pri", "conn_or_acquire", "_get_message_priority")):
        yield
        return
    held: list[tuple[str, dict[str, Any]]] = []

    def hold(queue: str, message: dict[str, Any], **_: Any) -> None:
        held.append((queue, message))

    channel._put = hold
    try:
        yield
    finally:
        del channel._put
    with channel.conn_or_acquire() as client:
        pipe = client.pipeline(transaction=False)
        for queue, message in held:
            pipe.lpush(channel._q_for_pri(queue, channel._get_message_priority(message)), _kombu_dumps(message))
        pipe.execute()


def publish_next(order_key: str) -> bool:
    """A task of this key finished: publish the oldest pending one, if any."""
    nxt = (
        GlobalTask.objects.filter(order_key=order_key, task_status=Status.PENDING)
        .order_by("created_ns")
        .values_list("task_id", flat=True)
        .first()
    )
    return publish(nxt) if nxt else False


def sweep(limit: int = 500) -> int:
    """Publish pending tasks that were never published, or whose message seems lost. Returns the count."""
    now = now_ts()
    # Measured from the last update: a retry or a move resets dispatched_at and publishes on commit
    # itself, and the sweep must not race that publish.
    never = Q(dispatched_at__isnull=True, task_update_timestamp__lte=now - settings.TASKHUB_DISPATCH_GRACE_SECONDS)
    stale = Q(dispatched_at__lte=now - settings.TASKHUB_REDISPATCH_SECONDS)
    rows = list(
        GlobalTask.objects.filter(never | stale, task_status=Status.PENDING)
        .exclude(node="")
        .exclude(node__in=_pull_nodes())
        .order_by("task_create_timestamp")
        .values_list("task_id", "node", "dispatched_at")[:limit]
    )
    published = 0
    for task_id, node, dispatched_at in rows:
        # A task published before and still queued is just waiting for a busy or offline node.
        if dispatched_at is not None and _queue_length(node) > 0:
            continue
        published += publish(task_id)
    if published:
        log.info("sweep published %s task(s)", published)
    return published + _resend_unconfirmed_cancels(now, limit)


def _resend_unconfirmed_cancels(now: int, limit: int) -> int:
    """A cancelling task that no node has reported on for its current run, published long enough ago,
    whose node's queue is empty: its message may be lost, and then no node would ever confirm the
    cancel. Its run is sent again: the node refuses it (the run's cancel marker) and reports cancelled."""
    reached = TaskStatusChange.objects.filter(
        task_id=OuterRef("pk"), run_id=OuterRef("run_id"), to_status__in=(Status.RECEIVED, Status.IN_PROGRESS)
    )
    waiting = (
        GlobalTask.objects.filter(
            task_status=Status.CANCELLING, dispatched_at__lte=now - settings.TASKHUB_REDISPATCH_SECONDS
        )
        .exclude(node="")
        .exclude(node__in=_pull_nodes())
        .exclude(Exists(reached))
        .order_by("task_update_timestamp")
        .values("task_id", *_RUN_FIELDS)
    )
    sent = 0
    for row in list(waiting[:limit]):
        if _queue_length(row["node"]) == 0:
            sent += _send_run(row["task_id"], row)
    if sent:
        log.info("sweep sent %s cancelled run(s) again, for their nodes to confirm", sent)
    return sent


def _queue_length(node: str) -> int:
    try:
        with current_app.connection_for_write() as conn:
            client = conn.default_channel.client  # type: ignore[attr-defined]  # kombu's redis channel
            return int(client.llen(node_queue(node)))
    except (redis.RedisError, AttributeError):
        return 0


def end_run(run_id: str, why: run_end.End) -> None:
    """Tell the nodes a run must stop: its end marker, which every node reads before it starts the run,
    at the handler's safe points and before each report, and a Celery revoke for a message still
    waiting in a worker. Best effort: a broker outage must not turn a done cancel into an error."""
    if not run_id:
        return
    try:
        run_end.mark(run_id, why)
        current_app.control.revoke(run_id)
    except Exception as exc:
        log.warning("could not tell the nodes that run %s must stop (%s): %s", run_id, why.value, exc)
