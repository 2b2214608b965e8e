"""Serializers for /api/v1. Validation reuses tasks_app/tasks/validation.py; saving goes through services."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field, inline_serializer
from rest_framework import serializers
from rest_framework.settings import api_settings

from tasks_app.api.fields import StrictBooleanField, TextField
from tasks_app.errors import InvalidInput
from tasks_app.fleet.placement import CONSTRAINTS_SCHEMA, PLACEMENT_SCHEMA, parse_constraints
from tasks_app.tasks import bulk, dispatch, validation
from tasks_app.tasks.models import SEED_FIELDS, GlobalTask, TaskStatusChange
from workers.protocol.payload import NAME_RE
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


@extend_schema_field(CONSTRAINTS_SCHEMA)
class ConstraintsField(serializers.JSONField):
    """A create's placement constraints (tasks_app/fleet/placement.py), checked there."""

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        return dict(_check(parse_constraints, super().to_internal_value(data)))


@extend_schema_field(PLACEMENT_SCHEMA)
class PlacementField(serializers.JSONField):
    pass


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
        required=False,
        allow_blank=True,
        help_text="run on this node (default: placement picks the least-loaded participant that may take it)",
    )
    constraints = ConstraintsField(
        required=False,
        help_text='what its node must offer: {"labels": {"disk": "ssd"}, "capacity": {"slots": 1}}; the capacity '
        "is reserved while the task is unfinished. A task no node may take is created failed (Unschedulable)",
    )
    placement = PlacementField(
        read_only=True, help_text="why it runs on its node: the rule, the candidates and their load, any moves"
    )
    history_url = serializers.HyperlinkedIdentityField(view_name="task-history", lookup_field="pk")

    class Meta:
        model = GlobalTask
        fields = [*SEED_FIELDS, "execute", "executed", "node", "run_id", "attempts", "constraints", "placement",
                  "history_url"]  # fmt: skip
        read_only_fields = ["task_update_timestamp", "task_create_timestamp", "run_id", "attempts", "placement"]

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
            writable = {
                "task_id", "task_data", "task_type", "task_status", "task_status_data",
                "node", "execute", "constraints",
            }  # fmt: skip
            for fixed in ("node", "execute", "constraints"):
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


# --- bulk create (POST /api/v1/tasks/bulk/) --------------------------------------------------------------


@extend_schema_field(TaskSerializer(many=True))
class TaskItemsField(serializers.ListField):
    """The items of a bulk create, taken as they are: validate_each checks each on its own, so that one
    bad item is that item's error, not the request's. Documented as a list of the create's bodies."""


class TaskBulkCreateSerializer(serializers.Serializer[Any]):
    tasks = TaskItemsField(
        help_text="the tasks to create, each a body of POST /api/v1/tasks/; at most TASKHUB_BULK_MAX (default 1000)"
    )

    default_error_messages = {"not_an_object": 'The body must be a JSON object, {{"tasks": [...]}}; got {kind}'}

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            kind = "an array" if isinstance(data, list) else type(data).__name__
            raise serializers.ValidationError(
                {api_settings.NON_FIELD_ERRORS_KEY: [self.error_messages["not_an_object"].format(kind=kind)]}
            )
        unknown = sorted(set(data) - {"tasks"})
        if unknown:
            raise serializers.ValidationError(dict.fromkeys(unknown, 'Unknown field; the body is {"tasks": [...]}'))
        return dict(super().to_internal_value(data))

    def validate_tasks(self, value: list[Any]) -> list[Any]:
        if not value:
            raise serializers.ValidationError("must hold at least one task")
        if len(value) > bulk.bulk_max():
            raise serializers.ValidationError(
                f"at most {bulk.bulk_max()} tasks per request (TASKHUB_BULK_MAX); got {len(value)}"
            )
        return value


# One item's answer. Documentation only: the view renders tasks_app.tasks.bulk.ItemResult itself. Built
# from a dict, since a serializer cannot declare a field named `errors` (Serializer.errors).
TaskBulkItemSerializer = inline_serializer(
    "TaskBulkItem",
    {
        "index": serializers.IntegerField(help_text="the item's position in `tasks`, from 0"),
        "task_id": serializers.CharField(
            allow_null=True, help_text="the task's id (the item's own, or the one it was given); null if none"
        ),
        "created": serializers.BooleanField(
            help_text="true: created now; false: not created (a retried create of a task that exists with the "
            "same body, or an item with errors)"
        ),
        "errors": serializers.DictField(
            child=serializers.ListField(child=serializers.CharField()),
            required=False,
            help_text="only for an item that was refused: field (or non_field_errors) -> messages",
        ),
    },
)


class TaskBulkResultSerializer(serializers.Serializer[Any]):
    created = serializers.IntegerField(help_text="items created now")
    existing = serializers.IntegerField(help_text="items whose task_id exists with the same body (a retried create)")
    failed = serializers.IntegerField(help_text="items refused, each with its errors")
    results = serializers.ListField(child=TaskBulkItemSerializer, help_text="one per item, in the request's order")


def validate_each(items: list[Any], *, context: dict[str, Any]) -> list[bulk.NewTaskSpec | bulk.Refused]:
    """Each item of a bulk create, checked exactly as POST /api/v1/tasks/ checks its body: the checks its
    parser makes on a whole body (validation.request_body), then TaskSerializer's. One serializer serves
    every item, as DRF's ListSerializer does (a new TaskSerializer per item costs more than the insert)."""
    child = TaskSerializer(context=context)
    checked: list[bulk.NewTaskSpec | bulk.Refused] = []
    for item in items:
        task_id = _echoed_id(item)
        try:
            if isinstance(item, dict):
                validation.request_body(item)
            child.initial_data = item  # what validate() reads for unknown fields (DRF's ListSerializer note)
            attrs = child.run_validation(item)
        except InvalidInput as exc:
            checked.append(bulk.Refused(bulk.errors_from(exc.message), task_id))
            continue
        except serializers.ValidationError as exc:
            checked.append(bulk.Refused(_messages(exc), task_id))
            continue
        checked.append(
            bulk.NewTaskSpec(
                task_type=attrs.get("task_type", ""),
                task_id=attrs.get("task_id"),
                task_data=attrs.get("task_data") or {},
                task_status=attrs.get("task_status", "pending"),
                task_status_data=attrs.get("task_status_data") or {},
                execute=bool(attrs.get("execute")),
                node=attrs.get("node") or None,
                constraints=attrs.get("constraints") or None,
            )
        )
    return checked


def _echoed_id(item: Any) -> str | None:
    """The item's task_id as the answer may repeat it: a short, storable string (even one the id rule
    refuses, so the client can tell which item it was); else None."""
    value = item.get("task_id") if isinstance(item, dict) else None
    if isinstance(value, str) and len(value) <= 64 and validation.is_storable(value):
        return value
    return None


def _messages(exc: serializers.ValidationError) -> bulk.Errors:
    detail = serializers.as_serializer_error(exc)
    return {
        str(field): [str(m) for m in (msgs if isinstance(msgs, list) else [msgs])] for field, msgs in detail.items()
    }


# --- replay (POST /api/v1/tasks/<id>/replay/) ------------------------------------------------------------


class TaskReplaySerializer(serializers.Serializer[Any]):
    """The body of a replay: every field optional (an empty body replays the same input). The edited
    task_data is checked by the create itself (services.task_replay), which names the field it refuses."""

    task_data = serializers.JSONField(
        required=False, help_text="the new task's task_data, a JSON object (default: the original's)"
    )
    node = TextField(required=False, help_text="run on this node (default: as the original was placed)")
    task_id = TextField(required=False, help_text="the new task's id (default: a uuid4); repeating the replay is safe")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # DRF drops unknown keys silently; a typo in a field name should be an error instead.
        unknown = sorted(set(self.initial_data) - set(self.fields)) if isinstance(self.initial_data, dict) else []
        if unknown:
            raise serializers.ValidationError(dict.fromkeys(unknown, "Unknown field"))
        return attrs

    def validate_task_data(self, value: Any) -> dict[str, Any]:
        return dict(_check(validation.json_object, value, "task_data"))

    def validate_task_id(self, value: str) -> str:
        return str(_check(validation.task_id, value))

    def validate_node(self, value: str) -> str:
        if not NAME_RE.fullmatch(value):
            raise serializers.ValidationError("must be a node name of 1-64 letters, digits, '.', '_' or '-'")
        return value
