"""Serializers for /api/v1. Validation reuses tasks_app.validation; saving goes through services."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from tasks_app import validation
from tasks_app.errors import InvalidInput
from tasks_app.models import GlobalTask, TaskStatusChange
from tasks_app.status import STATUS_VALUES


def _check(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except InvalidInput as exc:
        raise serializers.ValidationError(exc.message) from exc


class TaskSerializer(serializers.ModelSerializer[GlobalTask]):
    task_id = serializers.CharField(required=False, help_text="uuid4 by default; a client may choose its own")
    task_data = serializers.JSONField(required=False, help_text="a JSON object")
    task_status = serializers.ChoiceField(choices=STATUS_VALUES, required=False)
    task_status_data = serializers.JSONField(required=False, help_text="a JSON object")
    node = serializers.CharField(
        required=False, allow_blank=True, help_text="run on this node (default: the type's first participant)"
    )
    history_url = serializers.HyperlinkedIdentityField(view_name="task-history", lookup_field="pk")

    class Meta:
        model = GlobalTask
        fields = [
            "task_id",
            "task_data",
            "task_type",
            "task_update_timestamp",
            "task_create_timestamp",
            "task_status",
            "task_status_data",
            "node",
            "attempts",
            "history_url",
        ]
        read_only_fields = ["task_update_timestamp", "task_create_timestamp", "attempts"]

    def validate_task_id(self, value: str) -> str:
        if self.instance is not None and value != self.instance.task_id:
            raise serializers.ValidationError("task_id cannot be changed")
        return str(_check(validation.task_id, value))

    def validate_task_data(self, value: Any) -> dict[str, Any]:
        return dict(_check(validation.json_object, value, "task_data"))

    def validate_task_status_data(self, value: Any) -> dict[str, Any]:
        return dict(_check(validation.json_object, value, "task_status_data"))

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # DRF drops unknown keys silently; a typo in a field name should be an error instead.
        if isinstance(self.initial_data, dict):
            writable = {"task_id", "task_data", "task_type", "task_status", "task_status_data", "node"}
            if self.instance is not None and "node" in self.initial_data:
                raise serializers.ValidationError({"node": "the node is chosen when the task is created"})
            unknown = sorted(set(self.initial_data) - writable)
            if unknown:
                raise serializers.ValidationError(dict.fromkeys(unknown, "Unknown or read-only field"))
        return attrs


class TaskHistorySerializer(serializers.ModelSerializer[TaskStatusChange]):
    class Meta:
        model = TaskStatusChange
        fields = ["from_status", "to_status", "at", "source"]
