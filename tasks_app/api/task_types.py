"""/api/v1/task-types/: the executable task types, each with its payload's JSON Schema and what the
server does with it (ordering, cancel, retries, compensation, reassignment, run timeout). Read-only.

`add_task_data_components` (a POSTPROCESSING_HOOK) also puts each type's schema in the OpenAPI
document, as the component TaskData_<type>.
"""

from __future__ import annotations

import copy
from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers, viewsets
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from workers.protocol import specs

Schema = dict[str, Any]


def describe(spec: specs.TaskSpec) -> dict[str, Any]:
    """What GET /api/v1/task-types/ says about one type. Settings overrides (TASKHUB_RETRY_LIMITS,
    TASKHUB_RUN_TIMEOUTS) are applied: this is what the server does now."""
    has_order = spec.order_key is not specs.TaskSpec.order_key
    retry_limit = spec.retry_limit()
    return {
        "name": spec.name,
        "description": " ".join(spec.description.split()),
        "schema": spec.schema,
        "order_key": (spec.order_key_doc or "set by the type") if has_order else None,
        # Any executed task can be cancelled: before a node has it at once, on the node at the handler's
        # safe points (docs/task-types.md "Cancelling a task").
        "cancellable": True,
        "retryable": retry_limit > 0,
        "retry_limit": retry_limit,
        "compensates": spec.compensate is not None,
        "reassignable": spec.reassignable,
        "run_timeout": spec.timeout(),
    }


@extend_schema_field({"type": "object", "additionalProperties": True, "nullable": True})
class JSONSchemaField(serializers.JSONField):
    """A JSON Schema (draft 2020-12), or null for a type that publishes none."""


class TaskTypeSerializer(serializers.Serializer[Any]):  # reads describe() dicts
    name = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    schema = JSONSchemaField(help_text="task_data as JSON Schema (draft 2020-12); also components TaskData_<name>")
    order_key = serializers.CharField(
        allow_null=True, help_text="the ordering key's shape, e.g. volume:<cluster>:<name>; null: none"
    )
    cancellable = serializers.BooleanField(help_text="POST /api/v1/tasks/<id>/cancel/ stops it")
    retryable = serializers.BooleanField(help_text="recoverable errors are retried automatically")
    retry_limit = serializers.IntegerField(help_text="automatic retries per run (TASKHUB_RETRY_LIMITS applied)")
    compensates = serializers.BooleanField(help_text="a failure for good or a cancel undoes the parts that ran")
    reassignable = serializers.BooleanField(help_text="may move to another participant when its node goes offline")
    run_timeout = serializers.FloatField(
        allow_null=True, help_text="seconds a run may stay in_progress (TASKHUB_RUN_TIMEOUTS applied); null: none"
    )


_NAME = OpenApiParameter("name", str, OpenApiParameter.PATH, description="a task type, e.g. volume_create")


class TaskTypeViewSet(viewsets.ViewSet):
    """The executable task types and their payloads. Any account that may read /api/v1 may read them."""

    lookup_field = "name"
    lookup_value_regex = "[^/]+"
    http_method_names = ["get", "head", "options"]

    @extend_schema(responses=TaskTypeSerializer(many=True))
    def list(self, request: Request) -> Response:
        items = [describe(spec) for name in specs.known() if (spec := specs.get(name)) is not None]
        return Response(TaskTypeSerializer(items, many=True).data)

    @extend_schema(parameters=[_NAME], responses=TaskTypeSerializer)
    def retrieve(self, request: Request, name: str) -> Response:
        spec = specs.get(name)
        if spec is None:
            raise NotFound(f"No executable task type named {name!r}; known types: {', '.join(specs.known())}")
        return Response(TaskTypeSerializer(describe(spec)).data)


# --- the OpenAPI document ------------------------------------------------------------------------


def openapi30(schema: Any) -> Any:
    """A draft 2020-12 schema in OpenAPI 3.0's dialect: `"type": [t, "null"]` becomes `nullable`."""
    if isinstance(schema, list):
        return [openapi30(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: openapi30(value) for key, value in schema.items()}
    kind = out.get("type")
    if isinstance(kind, list):
        rest = [k for k in kind if k != "null"]
        if len(rest) == 1:
            out["type"] = rest[0]
            if "null" in kind:
                out["nullable"] = True
    return out


def add_task_data_components(result: Schema, generator: Any, request: Any, public: bool) -> Schema:
    """POSTPROCESSING_HOOKS: each executable type's task_data schema, as components TaskData_<type>."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    for name in specs.known():
        spec = specs.get(name)
        if spec is not None and spec.schema is not None:
            component = openapi30(copy.deepcopy(spec.schema))
            component.setdefault("description", f"task_data of {name} (GET /api/v1/task-types/{name}/)")
            schemas[f"TaskData_{name}"] = component
    return result
