"""Reads for the operator's dashboard (/admin/dashboard/). Every figure is one grouped query; the
view only puts them on the page."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import redis
from django.db.models import Count
from django.db.models.functions import TruncMinute
from django.utils import timezone

from tasks_app.fleet.placement import capacity_of
from tasks_app.fleet.selectors import Load, drained, node_loads, online_cutoff
from tasks_app.models import GlobalTask, Node, TaskStatusChange
from workers.protocol.status import STATUS_VALUES, TERMINAL, Status

# The final statuses, in the order the chart stacks them.
FINISHED: tuple[str, ...] = tuple(s for s in STATUS_VALUES if s in TERMINAL)


@dataclass(frozen=True)
class TypeRow:
    task_type: str
    counts: dict[str, int]  # by status, every status present

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def ordered(self) -> list[tuple[str, int]]:
        return [(s, self.counts[s]) for s in STATUS_VALUES]


@dataclass(frozen=True)
class TaskCounts:
    by_status: dict[str, int]
    by_type: list[TypeRow]

    @property
    def total(self) -> int:
        return sum(self.by_status.values())


@dataclass(frozen=True)
class Resource:
    name: str
    reserved: int  # what the node's unfinished tasks asked for
    total: int | None  # what the node offers (None: it offers none, yet tasks there reserve some)


@dataclass(frozen=True)
class NodeRow:
    name: str
    cluster: str
    state: str
    transport: str
    online: bool
    last_heartbeat: datetime | None
    scheduling: str = Node.Scheduling.SCHEDULABLE.value  # or cordoned, draining, drained
    labels: dict[str, str] = field(default_factory=dict)
    resources: list[Resource] = field(default_factory=list)
    unfinished: int = 0


@dataclass(frozen=True)
class Minute:
    start: datetime
    counts: dict[str, int] = field(default_factory=dict)  # by final status

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class StreamState:
    backlog: int | None  # None: Redis did not answer
    lag_seconds: float | None
    error: str = ""
    dead_letters: int | None = None  # entries the writers could not apply (tasks_app/tasks/dead_letters.py)


def task_counts() -> TaskCounts:
    """Tasks per type and status: one COUNT ... GROUP BY over the (task_type, task_status, ...) index."""
    by_status = dict.fromkeys(STATUS_VALUES, 0)
    by_type: dict[str, dict[str, int]] = {}
    rows = GlobalTask.objects.order_by().values_list("task_type", "task_status").annotate(n=Count("pk"))
    for ttype, status, n in rows:
        by_status[status] = by_status.get(status, 0) + n
        by_type.setdefault(ttype, dict.fromkeys(STATUS_VALUES, 0))[status] = n
    ordered = sorted(by_type.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
    return TaskCounts(by_status, [TypeRow(t, c) for t, c in ordered])


def failures_since(since: datetime) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Changes to failed at or after `since` (from the history table), by task type and by node."""
    failed = TaskStatusChange.objects.filter(to_status=Status.FAILED.value, at__gte=since).order_by()

    def grouped(column: str) -> list[tuple[str, int]]:
        rows = failed.values_list(column).annotate(n=Count("pk")).order_by("-n", column)
        return [(str(key), int(n)) for key, n in rows]

    return grouped("task__task_type"), grouped("task__node")


def scheduling_state(node: Node, load: Load) -> str:
    """schedulable, cordoned, draining, or drained (selectors.drained, from a load already read)."""
    if drained(node, load):
        return "drained"
    return str(node.scheduling)


def node_resources(node: Node, load: Load) -> list[Resource]:
    """Per resource, what the node's unfinished tasks reserve of what it offers (its effective capacity:
    an operator's declared capacity, "blocks" from its worker unless declared), by resource name."""
    offered = capacity_of(node.capacity if isinstance(node.capacity, dict) else {}, node.capacity_blocks)
    names = sorted(set(offered) | set(load.reserved))
    return [Resource(r, load.reserved.get(r, 0), offered.get(r)) for r in names]


def nodes() -> list[NodeRow]:
    """Every node, with its load: three queries however many nodes (node_loads)."""
    cutoff = online_cutoff()
    found = list(Node.objects.select_related("cluster").order_by("cluster__name", "name"))
    loads = node_loads([n.name for n in found])
    return [
        NodeRow(
            name=n.name,
            cluster=n.cluster.name,
            state=n.state,
            transport=n.transport,
            online=n.last_heartbeat is not None and n.last_heartbeat >= cutoff,
            last_heartbeat=n.last_heartbeat,
            scheduling=scheduling_state(n, loads[n.name]),
            labels=dict(n.labels) if isinstance(n.labels, dict) else {},
            resources=node_resources(n, loads[n.name]),
            unfinished=loads[n.name].unfinished,
        )
        for n in found
    ]


def throughput(minutes: int = 60, now: datetime | None = None) -> list[Minute]:
    """Tasks finished (changes to completed, failed or cancelled) per minute over the last `minutes`
    minutes, oldest first; the last bucket is the current, partial minute. Empty minutes are zeros."""
    end = (now or timezone.now()).replace(second=0, microsecond=0)
    start = end - timedelta(minutes=minutes - 1)
    buckets = {start + timedelta(minutes=i): dict.fromkeys(FINISHED, 0) for i in range(minutes)}
    rows = (
        TaskStatusChange.objects.filter(to_status__in=FINISHED, at__gte=start)
        .annotate(minute=TruncMinute("at"))
        .order_by()
        .values_list("minute", "to_status")
        .annotate(n=Count("pk"))
    )
    for minute, status, n in rows:
        bucket = buckets.get(minute)
        if bucket is not None:  # a clock a little ahead of ours lands past the window: not drawn
            bucket[status] += n
    return [Minute(at, counts) for at, counts in buckets.items()]


def stream_state() -> StreamState:
    """The update stream's backlog, lag and dead letters, as /metrics reports them; Redis being down
    is shown, not raised."""
    from tasks_app.ops import metrics
    from tasks_app.tasks import dead_letters
    from tasks_app.tasks import stream as update_stream

    try:
        return StreamState(update_stream.backlog(), metrics.stream_lag_seconds(), dead_letters=dead_letters.count())
    except (redis.RedisError, OSError) as exc:
        return StreamState(None, None, str(exc))
