"""Bulk create: many tasks in one call (a vDAG's steps, a cluster's nodes), answered item by item.

Each item is what a single create takes (services.task_create) and is judged by the same rules, with
the same functions: the row (services.new_task_row: an executed task's payload, checks, node and run),
its first status and history row (transitions.task_transition_new_many), and its publish after the
commit (dispatch.publish_created_many / publish_many). An item ends one of three ways: created; a
retried create (its task_id exists with the same body: created False, as a single create's 200); or
its errors, {field: [messages]}, which leave the other items alone. A task_id that exists with another
body, or that an earlier item of the same call already uses, is an error of that item.

The cost does not grow with a query per item: existing task_ids are read in one query, what placing
executed tasks reads is cached for the call (placement.Placement), every row and history row is
inserted in one statement on PostgreSQL (one transaction either way), and the executed tasks are
published in one round trip to the broker once it commits.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction

from tasks_app.errors import InvalidInput
from tasks_app.fleet.placement import Placement
from tasks_app.ops import metrics
from tasks_app.tasks import dispatch
from tasks_app.tasks.models import GlobalTask, new_task_id
from tasks_app.tasks.selectors import create_fingerprints
from tasks_app.tasks.services import create_fingerprint, new_task_row
from tasks_app.tasks.transitions import EXISTS, NewTask, task_transition_new_many
from workers.protocol.status import Status, Verdict

Errors = dict[str, list[str]]

# The fields of a create; an error message that starts with one of them is that field's.
FIELDS = ("task_id", "task_type", "task_data", "task_status", "task_status_data", "execute", "node", "constraints")
_LEADING_NAME = re.compile(r"^'?([A-Za-z_]+)")


@dataclass(frozen=True)
class NewTaskSpec:
    """One item: the fields of a single create (services.task_create), already checked field by field
    (the API's TaskSerializer)."""

    task_type: str
    task_id: str | None = None
    task_data: dict[str, Any] = field(default_factory=dict)
    task_status: str = Status.PENDING.value
    task_status_data: dict[str, Any] = field(default_factory=dict)
    execute: bool = False
    node: str | None = None
    constraints: dict[str, Any] | None = None

    def body(self) -> dict[str, Any]:
        """What a create is made of (its fingerprint, and its row), its task_id aside."""
        return {
            "task_type": self.task_type, "task_data": self.task_data, "task_status": self.task_status,
            "task_status_data": self.task_status_data, "execute": self.execute, "node": self.node,
            "constraints": self.constraints,
        }  # fmt: skip


@dataclass(frozen=True)
class Refused:
    """An item its caller already found invalid (the API's field checks): answered with these errors."""

    errors: Errors
    task_id: str | None = None


@dataclass(frozen=True)
class ItemResult:
    index: int
    task_id: str | None
    created: bool = False
    errors: Errors | None = None

    @property
    def ok(self) -> bool:
        return self.errors is None


def errors_from(message: str) -> Errors:
    """A domain error's message as field errors: the field it starts with (e.g. "task_data.node: ..."
    is task_data's), else non_field_errors. The message is kept whole: it names the exact path."""
    match = _LEADING_NAME.match(message)
    name = match.group(1) if match else ""
    return {name if name in FIELDS else "non_field_errors": [message]}


def bulk_max() -> int:
    return int(settings.TASKHUB_BULK_MAX)


def task_create_many(*, items: Sequence[NewTaskSpec | Refused], source: str = "") -> list[ItemResult]:
    """Create the valid items in one transaction; one ItemResult per item, in order (index: its
    position). At most TASKHUB_BULK_MAX items (InvalidInput beyond)."""
    if len(items) > bulk_max():
        raise InvalidInput(f"tasks: at most {bulk_max()} per request (TASKHUB_BULK_MAX); got {len(items)}")
    results: list[ItemResult | None] = [None] * len(items)
    specs: list[tuple[int, NewTaskSpec]] = []
    first_use: dict[str, int] = {}
    for i, item in enumerate(items):
        if isinstance(item, Refused):
            results[i] = ItemResult(i, item.task_id, errors=item.errors)
        elif item.task_id is not None and item.task_id in first_use:
            why = (
                f"task_id {item.task_id!r} is also item {first_use[item.task_id]} of this request; each may appear once"
            )
            results[i] = ItemResult(i, item.task_id, errors={"task_id": [why]})
        else:
            if item.task_id is not None:
                first_use[item.task_id] = i
            specs.append((i, item))
    fingerprints = {i: create_fingerprint(**spec.body()) for i, spec in specs}
    existing = create_fingerprints([s.task_id for _, s in specs if s.task_id is not None])
    placement = Placement()
    rows: list[tuple[int, GlobalTask]] = []
    # One transaction from placing to inserting: capacity that placement found free (and locked) is
    # still free when the rows that reserve it are written.
    with transaction.atomic():
        for i, spec in specs:
            if spec.task_id is not None and spec.task_id in existing:
                results[i] = _replay(i, spec.task_id, existing[spec.task_id], fingerprints[i])
                continue
            try:
                row = new_task_row(
                    task_id=spec.task_id or new_task_id(),
                    **spec.body(),
                    fingerprint=fingerprints[i],
                    placement=placement,
                )
            except InvalidInput as exc:
                results[i] = ItemResult(i, spec.task_id, errors=errors_from(exc.message))
                continue
            rows.append((i, row))
        _in_item_order([row for _, row in rows])
        created, raced = _insert(rows, results, source)
        if raced:
            # Taken since they were read (a concurrent create): answered like a retried create, or a conflict.
            stored = create_fingerprints([row.task_id for _, row in raced])
            for i, row in raced:
                results[i] = _replay(i, row.task_id, stored.get(row.task_id), row.create_fingerprint)
        _publish_on_commit(created)
        for task_type, n in Counter(t.task_type for t in created).items():
            metrics.count_created(task_type, n)  # counted on commit; never raises
    return [r for r in results if r is not None]


def _replay(index: int, task_id: str, stored: str | None, fingerprint: str) -> ItemResult:
    """The answer services.task_create gives a task_id that exists: the same body is a retried create."""
    if stored == fingerprint:
        return ItemResult(index, task_id, created=False)
    if stored is None:  # gone again between the insert and the read (deleted meanwhile)
        return ItemResult(index, task_id, errors={"task_id": [f"Task {task_id!r} could not be created; try again"]})
    return ItemResult(index, task_id, errors={"task_id": [f"Task {task_id!r} already exists with a different body"]})


def _in_item_order(rows: list[GlobalTask]) -> None:
    """created_ns is what "created before" means (the order of an ordering key's tasks, the cursor of
    /api/v1/tasks/): strictly increasing in item order, as if the items had been created one by one."""
    last = 0
    for row in rows:
        if row.created_ns <= last:
            row.created_ns = last + 1
        last = row.created_ns


def _insert(
    rows: list[tuple[int, GlobalTask]], results: list[ItemResult | None], source: str
) -> tuple[list[GlobalTask], list[tuple[int, GlobalTask]]]:
    """Insert the rows with their history; the tasks created, and the (index, row) whose id was taken."""
    outcomes = task_transition_new_many(news=[NewTask(row, source) for _, row in rows])
    created: list[GlobalTask] = []
    raced: list[tuple[int, GlobalTask]] = []
    for (i, row), outcome in zip(rows, outcomes, strict=True):
        if outcome.verdict is Verdict.APPLY:
            results[i] = ItemResult(i, row.task_id, created=True)
            created.append(row)
        elif outcome.reason == EXISTS:
            raced.append((i, row))
        else:
            results[i] = ItemResult(i, row.task_id, errors={"task_status": [f"task_status: {outcome.reason}"]})
    return created, raced


def _publish_on_commit(created: list[GlobalTask]) -> None:
    """As services.task_create does for one: after the commit, never before (a worker must not get an id
    the database does not have yet); if this process dies first, the sweep publishes them."""
    direct = [t for t in created if t.node and t.dispatched_at is not None]  # Prepared.publish_on_commit
    read_back = [t.task_id for t in created if t.node and t.dispatched_at is None and t.task_status == Status.PENDING]
    if direct:
        transaction.on_commit(partial(dispatch.publish_created_many, direct))
    if read_back:
        transaction.on_commit(partial(dispatch.publish_many, read_back))
