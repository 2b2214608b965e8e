"""Task events, read from the history table: one event per history row (a creation, a status change, or
progress: a repeated status with new data). The row's id is the event's id, so an event stream can be
resumed from any id (GET /api/v1/events/ with Last-Event-ID, tasks_app/api/events.py).

Reads only. The stream's live tail (tasks_app/api/event_hub.py) and a client's catch-up both come through
`events_after`, so both say the same thing about the same row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import Max

from tasks_app.tasks.models import TaskStatusChange

CREATED, STATUS, PROGRESS = "created", "status", "progress"

_FIELDS = (
    "id", "task_id", "from_status", "to_status", "at", "source", "run_id", "progress", "task__task_type", "task__node",
)  # fmt: skip


@dataclass(frozen=True)
class Event:
    id: int
    task_id: str
    task_type: str
    node: str
    cluster: str
    from_status: str
    to_status: str
    at: datetime
    source: str
    run_id: str
    progress: dict[str, Any] | None

    @property
    def kind(self) -> str:
        if not self.from_status:
            return CREATED
        return PROGRESS if self.from_status == self.to_status else STATUS

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id, "task_id": self.task_id, "task_type": self.task_type, "node": self.node,
            "cluster": self.cluster, "kind": self.kind, "from_status": self.from_status,
            "to_status": self.to_status, "at": self.at.isoformat().replace("+00:00", "Z"), "source": self.source,
            "run_id": self.run_id,
        }  # fmt: skip
        if self.progress is not None:
            body["progress"] = self.progress
        return body


@dataclass(frozen=True)
class EventFilter:
    """Which events a stream sends. Empty sets take everything; `own_node` is a node account's scope
    (only its own tasks), applied whatever the filters say."""

    task_ids: frozenset[str] = frozenset()
    task_types: frozenset[str] = frozenset()
    statuses: frozenset[str] = frozenset()
    nodes: frozenset[str] = frozenset()
    clusters: frozenset[str] = frozenset()
    own_node: str | None = None

    def matches(self, event: Event) -> bool:
        return (
            (self.own_node is None or event.node == self.own_node)
            and (not self.task_ids or event.task_id in self.task_ids)
            and (not self.task_types or event.task_type in self.task_types)
            and (not self.statuses or event.to_status in self.statuses)
            and (not self.nodes or event.node in self.nodes)
            and (not self.clusters or event.cluster in self.clusters)
        )


def events_after(
    *, after: int, upto: int | None = None, limit: int, filt: EventFilter | None = None, clusters: dict[str, str]
) -> list[Event]:
    """Up to `limit` events with after < id (<= upto), in id order, that `filt` takes. `clusters` maps a
    node to its cluster (fleet.selectors.node_clusters()); the filter's task, status and node conditions run in SQL."""
    qs = TaskStatusChange.objects.filter(id__gt=after).order_by("id")
    if upto is not None:
        qs = qs.filter(id__lte=upto)
    if filt is not None:
        if filt.own_node is not None:
            qs = qs.filter(task__node=filt.own_node)
        if filt.task_ids:
            qs = qs.filter(task_id__in=filt.task_ids)
        if filt.task_types:
            qs = qs.filter(task__task_type__in=filt.task_types)
        if filt.statuses:
            qs = qs.filter(to_status__in=filt.statuses)
        nodes = set(filt.nodes)
        if filt.clusters:
            in_clusters = {n for n, c in clusters.items() if c in filt.clusters}
            nodes = nodes & in_clusters if nodes else in_clusters
            if not nodes:
                return []
        if nodes:
            qs = qs.filter(task__node__in=nodes)
    return [_event(row, clusters) for row in qs.values_list(*_FIELDS)[:limit]]


def _event(row: tuple[Any, ...], clusters: dict[str, str]) -> Event:
    id_, task_id, from_status, to_status, at, source, run_id, progress, task_type, node = row
    return Event(
        id=id_, task_id=task_id, task_type=task_type, node=node, cluster=clusters.get(node, ""),
        from_status=from_status, to_status=to_status, at=at, source=source, run_id=run_id,
        progress=progress if isinstance(progress, dict) else None,
    )  # fmt: skip


def last_event_id() -> int:
    return int(TaskStatusChange.objects.aggregate(m=Max("id"))["m"] or 0)


def snapshot_bounds() -> tuple[int, int] | None:
    """PostgreSQL: (xmin, xmax) of a snapshot taken now: every transaction with an id below xmin has
    ended, and every one that has started has an id below xmax. None on a database without them.

    This is what makes a gap in the history ids decidable: an id is taken (nextval) inside the
    transaction that inserts its row, so a row missing below a visible one belongs to a transaction
    that was running when the gap was seen (its id < that moment's xmax); once xmin has passed that
    xmax, the transaction has ended, and the row either is visible or never will be (rolled back, or
    deleted with its task).

    This assumes a transaction has its xid before it takes a history id: every path that inserts history
    rows writes or locks the task row first (transitions lock with SELECT ... FOR UPDATE; a creation
    inserts the task first). A history row inserted on its own, in autocommit, would break it."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_snapshot_xmin(s)::text::bigint, pg_snapshot_xmax(s)::text::bigint "
            "FROM pg_current_snapshot() AS s"
        )
        xmin, xmax = cursor.fetchone()
    return int(xmin), int(xmax)
