"""Serializers for /api/v1. Validation reuses tasks_app/tasks/validation.py; saving goes through services."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from tasks_app.api.fields import StrictBooleanField, TextField
from tasks_app.errors import InvalidInput
from tasks_app.tasks import dispatch, validation
from tasks_app.tasks.models import SEED_FIELDS, GlobalTask, TaskStatusChange
from workers.protocol.status import STATUS_VALUES


def _check(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except InvalidInput as exc:
        raise serializers.ValidationError(exc.message) from exc


class StatusField(serializers.ChoiceField):
    """A status by its name or a documented alias ("complete"), in any case; `cancelling` is a cancel's."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(choices=STATUS_VALUES, **kwargs)

    def to_internal_value(self, data: Any) -> str:
        return str(_check(validation.status, data))


class TaskSerializer(serializers.ModelSerializer[GlobalTask]):
    task_id = TextField(required=False, help_text="uuid4 by default; a client may choose its own")
    task_type = TextField(
        min_length=1, max_length=64, help_text="required: what kind of task (e.g. volume_create), printable text"
    )
    task_data = serializers.JSONField(required=False, help_text="a JSON object")
    task_status = StatusField(required=False)
    task_status_data = serializers.JSONField(required=False, help_text="a JSON object")
    execute = StrictBooleanField(
        required=False,
        allow_null=True,
        default=None,
        write_only=True,
        help_text="run it on a node (default: when task_type is executable); false stores a tracked record",
    )
    executed = serializers.BooleanField(read_only=True, help_text="run by a node, not a record its caller drives")
    node = TextField(
        required=False, allow_blank=True, help_text="run on this node (default: the type's rule, its first participant)"
    )
    history_url = serializers.HyperlinkedIdentityField(view_name="task-history", lookup_field="pk")

    class Meta:
        model = GlobalTask
        fields = [*SEED_FIELDS, "execute", "executed", "node", "run_id", "attempts", "history_url"]
        read_only_fields = ["task_update_timestamp", "task_create_timestamp", "run_id", "attempts"]

    def validate_task_id(self, value: str) -> str:
        if self.instance is not None and value != self.instance.task_id:
            raise serializers.ValidationError("task_id cannot be changed")
        return str(_check(validation.task_id, value))

    def validate_task_type(self, value: Any) -> str:
        return str(_check(validation.task_type, value))

    def validate_task_data(self, value: Any) -> dict[str, Any]:
        return dict(_check(validation.json_object, value, "task_data"))

    def validate_task_status_data(self, value: Any) -> dict[str, Any]:
        return dict(_check(validation.json_object, value, "task_status_data"))

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # DRF drops unknown keys silently; a typo in a field name should be an error instead.
        if isinstance(self.initial_data, dict):
            writable = {"task_id", "task_data", "task_type", "task_status", "task_status_data", "node", "execute"}
            for fixed in ("node", "execute"):
                if self.instance is not None and fixed in self.initial_data:
                    raise serializers.ValidationError({fixed: "is chosen when the task is created"})
            unknown = sorted(set(self.initial_data) - writable)
            if unknown:
                raise serializers.ValidationError(dict.fromkeys(unknown, "Unknown or read-only field"))
        if self.instance is None and attrs.get("execute") is None:
            # The orchestrator's API runs an executable type unless told not to; naming a node asks for it.
            attrs["execute"] = dispatch.executable(attrs.get("task_type", "")) or bool(attrs.get("node"))
        return attrs


class TaskHistorySerializer(serializers.ModelSerializer[TaskStatusChange]):
    class Meta:
        model = TaskStatusChange
        fields = ["from_status", "to_status", "at", "run_id", "source"]
