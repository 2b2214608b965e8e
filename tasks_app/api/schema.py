"""The OpenAPI schema at /api/schema/ (drf-spectacular): what the server does, errors and the seed API included.

drf-spectacular documents a view's success answer only. TaskhubAutoSchema (REST_FRAMEWORK
DEFAULT_SCHEMA_CLASS) adds the errors each operation can answer, derived from the operation itself
(credentials, path and query parameters, a body) plus the few per-action ones (409, 429). The seed API
is plain Django views, invisible to drf-spectacular, so `add_seed_api` (a POSTPROCESSING_HOOK) merges
its hand-written path items. tests/test_schemathesis.py holds the server to all of it.
"""

from __future__ import annotations

import copy
from typing import Any

from django.conf import settings
from drf_spectacular.extensions import (
    OpenApiAuthenticationExtension,
    OpenApiSerializerExtension,
    OpenApiSerializerFieldExtension,
)
from drf_spectacular.openapi import AutoSchema

from tasks_app.fleet.placement import CONSTRAINTS_SCHEMA
from tasks_app.tasks.models import SEED_FIELDS
from workers.families.volumes import VOLUME_TYPES
from workers.protocol.payload import NAME_RE
from workers.protocol.status import ALIASES, CLIENT_VALUES, STATUS_VALUES

Schema = dict[str, Any]

# --- shapes ----------------------------------------------------------------------------------------

# tasks_app/tasks/validation.py: _TASK_ID_RE and the task_type rule, as JSON Schema.
TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
# No control characters (Unicode category Cc), exactly the server's rule.
# No control characters, and no space at either end (a padded "volume_create " would be a record of
# another type, not the work asked for): tasks_app/tasks/validation.py task_type says the same.
TASK_TYPE_PATTERN = r"^[^\s\x00-\x1f\x7f-\x9f]([^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$"
NAME_PATTERN = NAME_RE.pattern

ERROR_DETAIL: Schema = {
    "type": "object",
    "description": "DRF's error shape: one message.",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
}
VALIDATION_ERRORS: Schema = {
    "type": "object",
    "description": "DRF's validation error shape: each field (or non_field_errors) -> its messages; "
    "a nested object or list for a nested field.",
    "additionalProperties": {"anyOf": [{"type": "string"}, {"type": "array"}, {"type": "object"}]},
    "minProperties": 1,
}
SEED_ERROR: Schema = {
    "type": "object",
    "description": "The seed API's error envelope (the reference service's).",
    "properties": {"success": {"type": "boolean", "enum": [False]}, "message": {"type": "string"}},
    "required": ["success", "message"],
    "additionalProperties": False,
}

TOKEN_SCHEME: Schema = {
    "type": "apiKey",
    "in": "header",
    "name": "Authorization",
    "description": "A DRF token: 'Token <key>' or 'Bearer <key>'. Any other scheme, or a wrong key, is a 401.",
}

_ERROR_COMPONENTS = {"ErrorDetail": ERROR_DETAIL, "ValidationErrors": VALIDATION_ERRORS, "SeedError": SEED_ERROR}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


# --- /api/v1: errors by operation --------------------------------------------------------------------

_API_ERRORS: dict[str, str] = {
    "400": "Invalid input: the field messages ({field: [messages]}), or {detail} naming what is wrong "
    "(a query parameter, an unknown one included, or the body)",
    "401": "No valid credentials: send 'Authorization: Token <key>' (or 'Bearer <key>'); a wrong key or another "
    "scheme is refused",
    "403": 'This account may not do this (README "Access control")',
    "404": "Nothing by that id or name (a node account sees only its own tasks)",
    "409": "Refused by the current state: the status rules, a task_id that exists with a different body, "
    "or a cluster or node name that exists",
    "413": "The body is over TASKHUB_MAX_BODY_BYTES; refused before the API reads it, with the seed envelope",
    "415": "The body is not application/json",
    "429": "Too many requests: retry after the Retry-After header's seconds",
    "503": "The database is unavailable: retry after the Retry-After header's seconds",
}

# Operations the current state can refuse with a 409 (TaskConflict, AlreadyExists), by (router basename, action).
_CONFLICTS = {
    ("cluster", "create"),
    ("node", "create"),
    ("task", "create"),
    ("task", "update"),
    ("task", "partial_update"),
    ("task", "cancel"),
    ("task", "retry"),
}


class TaskhubAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema, plus each operation's error answers (what a view declares wins)."""

    def get_operation(self, path: str, path_regex: str, path_prefix: str, method: str, registry: Any) -> Schema | None:
        operation: Schema | None = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        for parameter in operation.get("parameters", []):
            if parameter.get("in") == "query" and "enum" not in parameter.get("schema", {}):
                # `?since=` is no filter (django-filter, the paginator, `wait`); an empty choice is a 400.
                parameter["allowEmptyValue"] = True
        responses = operation.setdefault("responses", {})
        for code in self._error_codes(operation):
            responses.setdefault(code, self._error_response(code))
        return operation

    def _error_codes(self, operation: Schema) -> list[str]:
        where = {p.get("in") for p in operation.get("parameters", [])}
        body = "requestBody" in operation
        lists = bool(self._is_list_view() and self.get_filter_backends())
        codes = []
        if body or lists or where & {"query", "path"}:
            codes.append("400")
        if operation.get("security"):
            codes += ["401", "403"]
        if "path" in where:
            codes.append("404")
        if (getattr(self.view, "basename", None), getattr(self.view, "action", None)) in _CONFLICTS:
            codes.append("409")
        if body:
            codes += ["413", "415"]
        if getattr(self.view, "throttle_classes", None) or getattr(self.view, "may_be_busy", False):
            codes.append("429")
        codes.append("503")  # every operation needs the database (tasks_app/api/errors.py)
        return codes

    def _error_response(self, code: str) -> Schema:
        if code == "400":
            schema: Schema = {"anyOf": [_ref("ErrorDetail"), _ref("ValidationErrors")]}
        elif code == "413":
            schema = _ref("SeedError")
        else:
            schema = _ref("ErrorDetail")
        return {"description": _API_ERRORS[code], "content": {"application/json": {"schema": schema}}}


class TokenScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    """TaskhubTokenAuthentication takes `Token <key>` and `Bearer <key>` (tasks_app/api/authentication.py)."""

    target_class = "tasks_app.api.authentication.TaskhubTokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema: AutoSchema) -> Schema:
        return TOKEN_SCHEME


class StatusFieldSchema(OpenApiSerializerFieldExtension):  # type: ignore[no-untyped-call]
    """A client writes any status but `cancelling` (a cancel sets it), or an alias; it reads any status."""

    target_class = "tasks_app.api.serializers.StatusField"

    def map_serializer_field(self, auto_schema: AutoSchema, direction: str) -> Schema:
        if direction == "request":
            return _writable_status()
        return {"type": "string", "enum": list(STATUS_VALUES)}


class TaskSerializerSchema(OpenApiSerializerExtension):  # type: ignore[no-untyped-call]
    """What TaskSerializer's validators accept, which drf-spectacular cannot see: the task_id rule, JSON
    objects for the data fields, no unknown fields; and on a change (PUT, PATCH), only the changeable ones."""

    target_class = "tasks_app.api.serializers.TaskSerializer"

    def map_serializer(self, auto_schema: AutoSchema, direction: str) -> Schema:
        schema: Schema = auto_schema._map_serializer(  # type: ignore[no-untyped-call]
            self.target, direction, bypass_extensions=True
        )
        props = schema["properties"]
        for name in ("task_data", "task_status_data"):
            props[name] = {"type": "object", "additionalProperties": True, "description": "a JSON object"}
        if direction != "request":
            return schema
        props["task_id"].update(pattern=TASK_ID_PATTERN, maxLength=64)
        props["task_type"]["pattern"] = TASK_TYPE_PATTERN
        props["node"].update(pattern=f"^$|{NAME_PATTERN}", maxLength=64)
        if getattr(self.target, "partial", False):
            # Chosen when the task is created: a change may not name them (task_id only as it is).
            for fixed in ("task_id", "node", "execute", "constraints"):
                props.pop(fixed, None)
            schema["required"] = [r for r in schema.get("required", []) if r in props]
            if not schema["required"]:
                del schema["required"]
        schema["additionalProperties"] = False  # validate(): "Unknown or read-only field"
        return schema


class TaskBulkCreateSchema(OpenApiSerializerExtension):  # type: ignore[no-untyped-call]
    """What TaskBulkCreateSerializer checks itself: 1 to TASKHUB_BULK_MAX tasks, and no other field. Each
    item is a create's body (TaskRequest); an item that breaks its rules is that item's error in a 200."""

    target_class = "tasks_app.api.serializers.TaskBulkCreateSerializer"

    def map_serializer(self, auto_schema: AutoSchema, direction: str) -> Schema:
        schema: Schema = auto_schema._map_serializer(  # type: ignore[no-untyped-call]
            self.target, direction, bypass_extensions=True
        )
        schema["properties"]["tasks"].update(minItems=1, maxItems=int(settings.TASKHUB_BULK_MAX))
        schema["additionalProperties"] = False
        return schema


# What a client may write as a status (ENUM_NAME_OVERRIDES names it, apart from STATUS_VALUES).
WRITABLE_STATUSES = [*CLIENT_VALUES, *ALIASES]


def _writable_status(field: str = "task_status") -> Schema:
    return {
        "type": "string",
        "enum": WRITABLE_STATUSES,
        "description": f"{field}: a status, or an alias ({', '.join(f'{a} = {t.value}' for a, t in ALIASES.items())}); "
        "any case. `cancelling` is set by a cancel, never written.",
    }


# Rules the serializers check in validate_<field> or in a task type's payload check (so drf-spectacular
# cannot see them), by (component, property). Applied by the refine_fields hook.
_FIELD_RULES: dict[tuple[str, str], Schema] = {
    ("ClusterRequest", "name"): {"pattern": NAME_PATTERN},
    ("NodeRequest", "name"): {"pattern": NAME_PATTERN},
    ("VolumeCreateRequest", "name"): {"pattern": NAME_PATTERN},
    ("VolumeCreateRequest", "type"): {"enum": sorted(VOLUME_TYPES)},
    ("VolumeCreateRequest", "storage_units"): {
        "minItems": 1,
        "maxItems": max(high for _, high in VOLUME_TYPES.values()),
    },
    ("UnitInputRequest", "node"): {"pattern": NAME_PATTERN},
}


# Bodies whose serializer refuses a field it does not know (a typo is an error, not ignored).
_CLOSED = ("NodeUpdateRequest", "PatchedNodeUpdateRequest")


def refine_fields(result: Schema, generator: Any, request: Any, public: bool) -> Schema:
    """POSTPROCESSING_HOOKS: _FIELD_RULES and _CLOSED."""
    schemas = result.get("components", {}).get("schemas", {})
    for (component, prop), rule in _FIELD_RULES.items():
        target = schemas.get(component, {}).get("properties", {}).get(prop)
        if target is not None:
            target.update(rule)
    for component in _CLOSED:
        if component in schemas:
            schemas[component]["additionalProperties"] = False
    return result


# --- the seed API ------------------------------------------------------------------------------------

_SEED_ERRORS: dict[str, str] = {
    "400": "Invalid input: malformed JSON, an unknown field, or a field that breaks its rule (the message names it)",
    "401": "No valid credentials, from outside TASKHUB_SEED_ANON_NETWORKS (or a wrong token, or another scheme)",
    "403": 'This account may not do this (README "Access control"), or a cross-site browser write',
    "404": "No task by that id (a node account sees only its own tasks)",
    "405": "Another method than this path's (the Allow header names them)",
    "409": "Refused by the task's state: the status rules, or a task_id that exists with a different body",
    "413": "The body is over TASKHUB_MAX_BODY_BYTES",
    "415": "The body is not application/json",
    "503": "A dependency is down: the database, or for /task_update Redis (the update was not queued), or with "
    "TASKHUB_UPDATE_WAIT_REPLICAS too few Redis replicas confirmed the update (it may still be applied). "
    "Retry after the Retry-After header's seconds (a create with its own task_id, and an update, are safe to repeat)",
}

_SEED_READS = ("seed_task_retrieve", "seed_tasks_list")

_OBJECT: Schema = {"type": "object", "additionalProperties": True, "description": "a JSON object"}


def _seed_components() -> dict[str, Schema]:
    task_id = {"type": "string", "pattern": TASK_ID_PATTERN, "maxLength": 64, "description": "uuid4 by default"}
    task_type = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": TASK_TYPE_PATTERN}
    return {
        "SeedTask": {
            "type": "object",
            "description": "The reference service's 7 fields.",
            "properties": {
                "task_id": {"type": "string"},
                "task_data": _OBJECT,
                "task_type": {"type": "string"},
                "task_update_timestamp": {"type": "integer"},
                "task_create_timestamp": {"type": "integer"},
                "task_status": {"type": "string", "enum": list(STATUS_VALUES)},
                "task_status_data": _OBJECT,
            },
            "required": list(SEED_FIELDS),
            "additionalProperties": False,
        },
        "SeedTaskCreateRequest": {
            "type": "object",
            "description": "A tracked task, stored as sent; with execute: true, an executed one (its type must "
            "be executable, task_data its payload; node may choose where it runs).",
            "properties": {
                "task_id": task_id,
                "task_type": task_type,
                "task_data": _OBJECT,
                "task_status": _writable_status(),
                "task_status_data": _OBJECT,
                "execute": {"type": "boolean"},
                "node": {"type": "string", "nullable": True, "description": "only with execute: true"},
                "constraints": {
                    **CONSTRAINTS_SCHEMA,
                    "nullable": True,
                    "description": "only with execute: true: labels and capacity "
                    "its node must offer (docs/task-types.md, Placement)",
                },
            },
            "required": ["task_type"],
            "additionalProperties": False,
        },
        "SeedTaskChangeRequest": {
            "type": "object",
            "properties": {
                "task_type": task_type,
                "task_data": _OBJECT,
                "task_status": _writable_status(),
                "task_status_data": _OBJECT,
            },
            "minProperties": 1,
            "additionalProperties": False,
        },
        "SeedTaskUpdatePushRequest": {
            "type": "object",
            "properties": {
                "task_id": task_id,
                "status": _writable_status("status"),
                "task_status_data": {**_OBJECT, "nullable": True},
                "run_id": {
                    "type": "string",
                    "maxLength": 36,
                    "description": "a node account's report: the run id the pull API gave with the task",
                },
            },
            "required": ["task_id", "status"],
            "additionalProperties": False,
        },
    }


def _envelope(data: Schema | None = None, **extra: Schema) -> Schema:
    props: Schema = {"success": {"type": "boolean", "enum": [True]}}
    if data is not None:
        props["data"] = data
    props.update(extra)
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def _message(**extra: Schema) -> Schema:
    props: Schema = {"message": {"type": "string"}, **extra}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def _seed_operation(
    operation_id: str,
    summary: str,
    ok: Schema,
    errors: str,
    *,
    body: str | None = None,
    parameters: list[Schema] | None = None,
) -> Schema:
    security: list[Schema] = [{"tokenAuth": []}]
    if operation_id in _SEED_READS:
        security.append({"cookieAuth": []})  # a browser session counts for GET only
    security.append({})  # anonymous, from TASKHUB_SEED_ANON_NETWORKS (loopback by default)
    responses: Schema = {"200": {"description": "", "content": {"application/json": {"schema": ok}}}}
    for code in errors.split():
        responses[code] = {
            "description": _SEED_ERRORS[code],
            "content": {"application/json": {"schema": _ref("SeedError")}},
        }
    operation: Schema = {"operationId": operation_id, "summary": summary, "tags": ["seed"]}
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    operation["security"] = security
    operation["responses"] = responses
    return operation


def _query(name: str, schema: Schema, description: str) -> Schema:
    parameter = {"name": name, "in": "query", "required": False, "schema": schema, "description": description}
    if "enum" not in schema:
        parameter["allowEmptyValue"] = True  # read as absent (seed.py); an empty task_status is a 400
    return parameter


def seed_paths() -> dict[str, Schema]:
    """The seed API (tasks_app/api/seed.py; ../shared/DESIGN.md "The seed API contract")."""
    task_path = {"name": "task_id", "in": "path", "required": True, "schema": {"type": "string"}}
    list_params = [
        _query("task_type", {"type": "string"}, "only tasks of this type"),
        _query(
            "task_status",
            {"type": "string", "enum": [*STATUS_VALUES, *ALIASES]},
            "only tasks in this status (a status or an alias, any case)",
        ),
        _query(
            "updated_since",
            {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
            "only tasks updated at or after (epoch seconds)",
        ),
        _query(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": int(settings.TASKHUB_MAX_PAGE_SIZE)},
            f"page size (default TASKHUB_PAGE_SIZE, {settings.TASKHUB_PAGE_SIZE})",
        ),
        _query("after", {"type": "string"}, "the cursor in a page's `next`"),
    ]
    task = _ref("SeedTask")
    return {
        "/task": {
            "post": _seed_operation(
                "seed_task_create",
                "Create a task",
                _envelope(_message(task_id={"type": "string"})),
                "400 401 403 405 409 413 415 503",
                body="SeedTaskCreateRequest",
            )
        },
        "/task/{task_id}": {
            "get": _seed_operation(
                "seed_task_retrieve", "Read a task", _envelope(task), "400 401 403 404 405 503", parameters=[task_path]
            ),
            "put": _seed_operation(
                "seed_task_change",
                "Change a task's fields",
                _envelope(_message(modified_count={"type": "integer"})),
                "400 401 403 404 405 409 413 415 503",
                body="SeedTaskChangeRequest",
                parameters=[task_path],
            ),
            "delete": _seed_operation(
                "seed_task_delete",
                "Delete a task",
                _envelope(_message()),
                "400 401 403 404 405 503",
                parameters=[task_path],
            ),
        },
        "/tasks": {
            "get": _seed_operation(
                "seed_tasks_list",
                "List tasks, oldest first",
                _envelope(
                    {"type": "array", "items": task},
                    next={"type": "string", "format": "uri", "nullable": True, "description": "the next page"},
                ),
                "400 401 403 405 503",
                parameters=list_params,
            )
        },
        "/task_update": {
            "post": _seed_operation(
                "seed_task_update_push",
                "Queue a status update",
                {
                    "type": "object",
                    "properties": {"success": {"type": "boolean", "enum": [True]}, "message": {"type": "string"}},
                    "required": ["success", "message"],
                    "additionalProperties": False,
                },
                "400 401 403 404 405 409 413 415 503",
                body="SeedTaskUpdatePushRequest",
            )
        },
    }


def add_seed_api(result: Schema, generator: Any, request: Any, public: bool) -> Schema:
    """POSTPROCESSING_HOOKS: the seed API's paths, first, and their components."""
    result["paths"] = {**seed_paths(), **result.get("paths", {})}
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    # Added here, after the enum hook, which would move their one-value enums into components of their own.
    for name, schema in {**_ERROR_COMPONENTS, **_seed_components()}.items():
        schemas.setdefault(name, copy.deepcopy(schema))
    schemes = result["components"].setdefault("securitySchemes", {})
    schemes.setdefault("tokenAuth", TOKEN_SCHEME)
    schemes.setdefault("cookieAuth", {"type": "apiKey", "in": "cookie", "name": settings.SESSION_COOKIE_NAME})
    tags = result.setdefault("tags", [])
    if not any(t.get("name") == "seed" for t in tags):
        tags.append({"name": "seed", "description": "The reference service's API: /task, /tasks, /task_update"})
    return result
