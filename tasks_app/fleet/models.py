"""Clusters, nodes and what lives on them. Rows here are written by completion hooks, when the task
that does the work on the nodes has completed (Kadalu: "creates a record in respective table")."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


class Cluster(models.Model):
    class State(models.TextChoices):
        CREATING = "creating"
        READY = "ready"
        REMOVED = "removed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=64, unique=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.READY)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Node(models.Model):
    class State(models.TextChoices):
        # Registered, not yet a member: a node_addition task makes it one.
        JOINING = "joining"
        MEMBER = "member"
        REMOVED = "removed"

    class Transport(models.TextChoices):
        # "queue": a Celery worker on node.<name>; "pull": an agent polling /api/v1/tasks/<c>/<n>.
        QUEUE = "queue"
        PULL = "pull"

    class Scheduling(models.TextChoices):
        SCHEDULABLE = "schedulable"
        CORDONED = "cordoned"
        DRAINING = "draining"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Unique across clusters: the node's queue is node.<name>, one namespace on the broker.
    name = models.CharField(max_length=64, unique=True)
    cluster = models.ForeignKey(Cluster, on_delete=models.PROTECT, related_name="nodes")
    state = models.CharField(max_length=16, choices=State.choices, default=State.MEMBER)
    transport = models.CharField(max_length=8, choices=Transport.choices, default=Transport.QUEUE)
    # When it was registered: a node that has never sent a heartbeat counts as offline once the
    # grace period (TASKHUB_NODE_OFFLINE_SECONDS) from here has passed.
    registered_at = models.DateTimeField(default=timezone.now)
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    # Set by the dead-node sweep when heartbeats stop; cleared by the next heartbeat.
    offline_since = models.DateTimeField(null=True, blank=True)
    # What the node's last heartbeat said of its runs, for the stalled-run sweep (tasks_app/fleet/stalled.py):
    # {"running": [run ids it holds], "undelivered": [run ids with reports still in its outbox],
    # "truncated": a list was cut at its cap, "no_outcome": [runs the sweep asked about that it has no
    # outcome for]}; None when that heartbeat listed nothing (a pull agent, an older worker, an outbox it
    # could not read), and then no run of the node is judged.
    running_runs = models.JSONField(null=True, blank=True)
    # When that heartbeat was taken (Redis's clock), and since when the worker that sent it has been
    # listing its runs: a worker that just started has not yet received its redelivered messages.
    runs_reported_at = models.DateTimeField(null=True, blank=True)
    runs_listed_since = models.DateTimeField(null=True, blank=True)
    data_dir = models.CharField(max_length=512, blank=True, default="")
    # What the node's worker reports of its block ledger (heartbeats, node_addition). Placement reads
    # `capacity`, where an operator's "blocks" wins over this (tasks_app/fleet/placement.py: capacity_of).
    capacity_blocks = models.PositiveIntegerField(default=0)
    # Placement (tasks_app/fleet/placement.py): labels a task's constraints match ({"disk": "ssd"}), and
    # what the node offers per resource ({"slots": 4, "bytes": ...}); a task that states a need for a
    # resource reserves it on its node while it is unfinished.
    labels = models.JSONField(default=dict, blank=True)
    capacity = models.JSONField(default=dict, blank=True)
    # Whether placement may give it new tasks: cordoned and draining nodes take none (a drain also
    # moved its queued tasks away); uncordon makes it schedulable again.
    scheduling = models.CharField(max_length=16, choices=Scheduling.choices, default=Scheduling.SCHEDULABLE)
    # The node's own account (user "node:<name>", `manage.py create_node_token`): its token may pull
    # this node's tasks and report on them, nothing else (tasks_app/api/permissions.py).
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="taskhub_node"
    )

    class Meta:
        ordering = ["cluster__name", "name"]

    def __str__(self) -> str:
        return self.name


class Volume(models.Model):
    class State(models.TextChoices):
        CREATED = "created"
        STARTED = "started"
        STOPPED = "stopped"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=64)
    cluster = models.ForeignKey(Cluster, on_delete=models.PROTECT, related_name="volumes")
    type = models.CharField(max_length=32)
    state = models.CharField(max_length=16, choices=State.choices, default=State.CREATED)
    task_id = models.CharField(max_length=64, blank=True, default="")  # the volume_create task
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["cluster__name", "name"]
        constraints = [models.UniqueConstraint(fields=["cluster", "name"], name="volume_unique_name")]

    def __str__(self) -> str:
        return f"{self.cluster.name}/{self.name}"


class StorageUnit(models.Model):
    volume = models.ForeignKey(Volume, on_delete=models.CASCADE, related_name="storage_units")
    node = models.ForeignKey(Node, on_delete=models.PROTECT, related_name="storage_units")
    path = models.CharField(max_length=512)
    index = models.PositiveIntegerField()

    class Meta:
        ordering = ["volume", "index"]

    def __str__(self) -> str:
        return f"{self.node.name}:{self.path}"


class BlockAllocation(models.Model):
    """Blocks reserved on a node by a completed block_alloc task; the id is that task's id."""

    allocation_id = models.CharField(primary_key=True, max_length=64)
    node = models.ForeignKey(Node, on_delete=models.PROTECT, related_name="allocations")
    blocks = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.allocation_id} ({self.blocks} on {self.node.name})"


class Vdag(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=64)
    cluster = models.ForeignKey(Cluster, on_delete=models.PROTECT, related_name="vdags")
    node = models.ForeignKey(Node, on_delete=models.PROTECT, related_name="vdags")
    graph = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["cluster", "name"], name="vdag_unique_name")]

    def __str__(self) -> str:
        return self.name
