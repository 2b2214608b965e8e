"""Reads of the tasks table. Views and serializers call these; nothing here writes."""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from django.db.models import Q, QuerySet

from tasks_app.errors import InvalidInput, TaskNotFound
from tasks_app.models import GlobalTask, TaskStatusChange
from workers.protocol.status import RUNNING, TERMINAL, UNFINISHED

_T = TypeVar("_T")
IN_LIST_MAX = 500  # items per IN (...) list: SQLite bounds a statement's parameters


def chunked(items: Sequence[_T], size: int = IN_LIST_MAX) -> Iterator[Sequence[_T]]:
    """Bounded slices of `items`, for one IN (...) query each."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def create_fingerprints(task_ids: Sequence[str]) -> dict[str, str]:
    """task_id -> create_fingerprint of those of these tasks that exist (a few queries, however many)."""
    found: dict[str, str] = {}
    for part in chunked(task_ids):
        found.update(GlobalTask.objects.filter(pk__in=part).values_list("task_id", "create_fingerprint"))
    return found


def task_get(*, task_id: str) -> GlobalTask:
    task = GlobalTask.objects.filter(pk=task_id).first()
    if task is None:
        raise TaskNotFound(task_id)
    return task


def order_key_blockers(*, task_id: Any, order_key: Any, created_ns: Any) -> QuerySet[GlobalTask]:
    """What a task of an ordering key waits for: one at a time, in creation order. An earlier task of
    the key that is unfinished, or another one that is running (a later one, released while this one
    had failed, before its retry). The arguments may be OuterRef()s, for a subquery over many tasks."""
    earlier = Q(created_ns__lt=created_ns, task_status__in=UNFINISHED)
    running = Q(task_status__in=RUNNING)
    return GlobalTask.objects.filter(earlier | running, order_key=order_key).exclude(pk=task_id)


def task_filter(
    *,
    task_type: str | None = None,
    task_status: str | None = None,
    updated_since: int | None = None,
) -> QuerySet[GlobalTask]:
    qs = GlobalTask.objects.all()
    if task_type is not None:
        qs = qs.filter(task_type=task_type)
    if task_status is not None:
        qs = qs.filter(task_status=task_status)
    if updated_since is not None:
        qs = qs.filter(task_update_timestamp__gte=updated_since)
    return qs


def task_history(*, task_id: str) -> QuerySet[TaskStatusChange]:
    return TaskStatusChange.objects.filter(task_id=task_id).order_by("at", "id")


@dataclass(frozen=True)
class Page:
    tasks: list[GlobalTask]
    next_cursor: str | None


def task_list_page(
    *,
    task_type: str | None = None,
    task_status: str | None = None,
    updated_since: int | None = None,
    after: str | None = None,
    limit: int,
) -> Page:
    """One page of tasks, oldest first, keyset-paginated on (create time, id).

    A keyset (not an OFFSET) keeps every page as cheap as the first on millions of rows, and a
    task created while a client pages through never makes it skip or repeat a row.
    """
    qs = task_filter(task_type=task_type, task_status=task_status, updated_since=updated_since)
    if after is not None:
        ts, tid = decode_cursor(after)
        qs = after_cursor(qs, "task_create_timestamp", ts, tid)
    rows = list(qs.order_by("task_create_timestamp", "task_id")[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1].task_create_timestamp, rows[-1].task_id) if more else None
    return Page(tasks=rows, next_cursor=next_cursor)


def after_cursor(qs: QuerySet[GlobalTask], column: str, ts: int, task_id: str) -> QuerySet[GlobalTask]:
    """The rows after (ts, task_id) in (column, task_id) order: `column >= ts AND (column > ts OR task_id >
    task_id)`. The same rows as `column > ts OR (column = ts AND task_id > ...)`, but PostgreSQL can start
    an index scan at `column >= ts`; with the OR alone it reads the filtered list from its first row and
    drops rows up to the cursor, so a page deep in 10M rows took ~0.5 s instead of ~2 ms (docs/scaling.md)."""
    return qs.filter(**{f"{column}__gte": ts}).filter(Q(**{f"{column}__gt": ts}) | Q(task_id__gt=task_id))


def encode_cursor(ts: int, task_id: str) -> str:
    return base64.urlsafe_b64encode(f"{ts}|{task_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ts, tid = raw.split("|", 1)
        return int(ts), tid
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput("'after' is not a cursor returned by this API") from exc


def task_wait_for_change(
    *, task: GlobalTask, timeout: float, interval: float = 0.2, pause: Callable[[float], None] = time.sleep
) -> GlobalTask:
    """Long poll: the task as soon as its status or status data differ from `task`, or it is final,
    or `timeout` seconds have passed (then as it is). `pause(seconds)` waits between reads."""
    deadline = time.monotonic() + timeout
    seen = (task.task_status, task.task_status_data)
    while task.task_status not in TERMINAL and time.monotonic() < deadline:
        pause(min(interval, max(0.0, deadline - time.monotonic())))
        fresh = GlobalTask.objects.filter(pk=task.pk).first()
        if fresh is None:
            raise TaskNotFound(task.task_id)
        if (fresh.task_status, fresh.task_status_data) != seen:
            return fresh
        task = fresh
    return task
