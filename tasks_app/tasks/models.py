"""The Global tasks DB: one table of every system task, and the history of its status changes."""

from __future__ import annotations

import time
import uuid

from django.db import models

from workers.protocol.status import Status

# The seed's seven fields, in the seed's order: what GET /task/<id> answers, defined once here.
SEED_FIELDS: tuple[str, ...] = (
    "task_id",
    "task_data",
    "task_type",
    "task_update_timestamp",
    "task_create_timestamp",
    "task_status",
    "task_status_data",
)


def new_task_id() -> str:
    return str(uuid.uuid4())


def new_run_id() -> str:
    """A run's identity: never reused, whatever task_id a client chooses (it is the Celery task id)."""
    return str(uuid.uuid4())


def now_ts() -> int:
    """UTC epoch seconds, as the seed stores its timestamps."""
    return int(time.time())


class GlobalTask(models.Model):
    # The seed's seven fields, with the seed's names and defaults.
    task_id = models.CharField(primary_key=True, max_length=64, default=new_task_id, editable=False)
    task_data = models.JSONField(default=dict, blank=True)
    task_type = models.CharField(max_length=64, default="", blank=True)
    task_update_timestamp = models.BigIntegerField(default=now_ts)
    task_create_timestamp = models.BigIntegerField(default=now_ts, editable=False)
    task_status = models.CharField(
        max_length=16, choices=[(s.value, s.value) for s in Status], default=Status.PENDING.value
    )
    task_status_data = models.JSONField(default=dict, blank=True)

    # Not part of the seed's schema. An executed task has the node it runs on and its current run
    # (a new run id for each attempt); a tracked task, a record its caller drives, has neither.
    # dispatched_at: when the current run was last published to the node's queue (None: not yet,
    # the sweep will). attempts: explicit retries so far.
    node = models.CharField(max_length=64, blank=True, default="")
    run_id = models.CharField(max_length=36, blank=True, default="")
    dispatched_at = models.BigIntegerField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    # Tasks sharing an order key (one volume's create, start, stop, delete) run on one node, one at
    # a time, in the order they were created.
    order_key = models.CharField(max_length=160, blank=True, default="")
    # Creation order finer than the seed's one-second timestamps: what "created before" means for
    # dependent tasks, and the cursor for following new tasks on /api/v1/tasks/.
    created_ns = models.BigIntegerField(default=time.time_ns, editable=False)

    # Also not in the seed's schema: the sha256 of the create request, so a client retrying a
    # create with its own task_id gets the first answer, and a different body gets a 409.
    create_fingerprint = models.CharField(max_length=64, blank=True, default="", editable=False)

    # An executed task's placement (tasks_app/fleet/placement.py). constraints: what its creator asked
    # of its node, {"labels": {"disk": "ssd"}, "capacity": {"slots": 1}}; the capacity is reserved on
    # the node while the task is unfinished. placement: why it runs where it does, for operators: the
    # rule, the candidates with their load or why they were passed over, and any move since.
    constraints = models.JSONField(default=dict, blank=True)
    placement = models.JSONField(default=dict, blank=True)

    class Meta:
        db_table = "global_task"
        verbose_name = "task"
        indexes = [
            # GET /tasks?task_type=&task_status= and its pages (keyset on create time, id).
            models.Index(
                fields=["task_type", "task_status", "task_create_timestamp", "task_id"],
                name="task_type_status_created",
            ),
            models.Index(fields=["task_type", "task_create_timestamp", "task_id"], name="task_type_created"),
            models.Index(fields=["task_status", "task_create_timestamp", "task_id"], name="task_status_created"),
            models.Index(fields=["task_create_timestamp", "task_id"], name="task_created"),
            # The pull API and the node's view: unfinished tasks of one node.
            models.Index(fields=["node", "task_status", "task_create_timestamp"], name="task_node_status"),
            # Balanced placement's tie-break: the node given a task least recently.
            models.Index(fields=["node", "created_ns"], name="task_node_created"),
            models.Index(fields=["order_key", "created_ns"], name="task_order_key"),
            models.Index(fields=["created_ns", "task_id"], name="task_created_ns"),
            models.Index(fields=["task_type", "task_status", "created_ns"], name="task_type_status_ns"),
            # The dispatch sweep: executable tasks not yet published.
            models.Index(
                fields=["task_status", "dispatched_at"],
                name="task_undispatched",
                condition=models.Q(task_status="pending") & ~models.Q(node=""),
            ),
            # "What changed since T" (updated_since=), for pollers and dashboards.
            models.Index(fields=["task_update_timestamp", "task_id"], name="task_updated"),
        ]

    def __str__(self) -> str:
        return f"{self.task_type or '-'} {self.task_id} [{self.task_status}]"

    @property
    def executed(self) -> bool:
        """Run by a node that taskhub assigned (not a record its caller drives)."""
        return bool(self.node)


class TaskStatusChange(models.Model):
    """One row per status change of a task: from, to, when, which run, and who asked (the source)."""

    task = models.ForeignKey(GlobalTask, on_delete=models.CASCADE, related_name="history")
    from_status = models.CharField(max_length=16, blank=True, default="")  # "" for the creation
    to_status = models.CharField(max_length=16)
    at = models.DateTimeField(db_index=True)
    source = models.CharField(max_length=128, blank=True, default="")
    run_id = models.CharField(max_length=36, blank=True, default="")  # "" for a tracked task
    # A row whose from_status equals its to_status is progress: a repeated status that brought new data.
    # The "progress" object (percent, message) of the data a change brought, when it has one, is kept here
    # so that the event stream (GET /api/v1/events/) can replay it; the full data stays on the task only.
    progress = models.JSONField(null=True, blank=True)

    class Meta:
        db_table = "global_task_history"
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["task", "at", "id"], name="task_history_task_at")]

    def __str__(self) -> str:
        return f"{self.task_id}: {self.from_status or '(new)'} -> {self.to_status}"


class StreamOffset(models.Model):
    """How far the writers have applied each shard of the update stream.

    The offset is committed in the same transaction as the updates it covers, so a writer that
    dies mid-batch leaves the offset where it was and the next owner re-reads the same entries.
    Locking this row (SELECT ... FOR UPDATE) is also what makes one writer at a time own a shard.
    """

    shard = models.PositiveIntegerField(primary_key=True)
    last_id = models.CharField(max_length=32, default="0-0")
    applied = models.BigIntegerField(default=0)

    class Meta:
        db_table = "global_task_stream_offset"

    def __str__(self) -> str:
        return f"shard {self.shard} @ {self.last_id}"
