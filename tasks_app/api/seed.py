"""The seed API: the reference Global tasks DB service's paths, envelopes and status codes.

Plain Django views rather than DRF: these paths carry most of the traffic, and the contract is
small and fixed. Input checks live in tasks_app/tasks/validation.py, writes in services, reads in selectors.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from tasks_app.api import permissions
from tasks_app.api.errors import seed_error
from tasks_app.errors import InvalidInput, TaskhubError
from tasks_app.fleet.placement import parse_constraints
from tasks_app.tasks import selectors, services, validation
from tasks_app.tasks.models import SEED_FIELDS, GlobalTask

# The reference service's fields, and taskhub's documented opt-in to execution ("execute", "node", "constraints").
_CREATE_FIELDS = (
    "task_id", "task_data", "task_type", "task_status", "task_status_data", "execute", "node", "constraints",
)  # fmt: skip
_PUT_FIELDS = ("task_data", "task_type", "task_status", "task_status_data")
# "run_id": for a node account (a pull agent) reporting on one run of its task.
_UPDATE_FIELDS = ("task_id", "status", "task_status_data", "run_id")
_LIST_PARAMS = ("task_type", "task_status", "updated_since", "limit", "after")
_MAX_EPOCH = 2**63 - 1  # a bigint column: a larger number is a 400 here, not a database error

View = Callable[..., HttpResponse]


def seed_task(task: GlobalTask) -> dict[str, Any]:
    return {name: getattr(task, name) for name in SEED_FIELDS}


def ok(data: Any, status: int = 200, **extra: Any) -> JsonResponse:
    return JsonResponse({"success": True, "data": data, **extra}, status=status)


def seed_view(methods: tuple[str, ...], *, node_methods: tuple[str, ...] = ()) -> Callable[[View], View]:
    """Access control (tasks_app.api.permissions.seed_access; `node_methods` are those a node account may
    call, on its own tasks), method check, CSRF exemption (API clients have no session) and domain
    errors as envelopes."""

    def decorate(view: View) -> View:
        @csrf_exempt
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            denied = permissions.seed_access(request, node_methods=node_methods)
            if denied is not None:
                return denied
            if request.method not in methods:
                response = seed_error(f"Method {request.method} not allowed; use {', '.join(methods)}", 405)
                response["Allow"] = ", ".join(methods)
                return response
            if request.method in _BODY_METHODS and request.body and not _is_json(request.content_type):
                # As the reference service's JSON parsing implies; and a body a page can send cross-site
                # without a preflight (text/plain, a form) is never read as a write. (No body: json_body's 400.)
                sent = request.content_type or "none"
                return seed_error(f"Content-Type must be application/json; got {sent}", 415)
            try:
                return view(request, *args, **kwargs)
            except TaskhubError as exc:
                return seed_error(exc.message, exc.http_status)
            except RequestDataTooBig:
                return seed_error(f"Request body is over the limit of {settings.TASKHUB_MAX_BODY_BYTES} bytes", 413)

        return wrapper

    return decorate


_BODY_METHODS = ("POST", "PUT", "PATCH")


def _is_json(content_type: str | None) -> bool:
    # application/json exactly, as on /api/v1 (DRF's JSON parser): one rule on both surfaces.
    return (content_type or "").lower() == "application/json"


def json_body(request: HttpRequest) -> dict[str, Any]:
    raw = request.body
    if not raw:
        raise InvalidInput("Request body is empty; send a JSON object")
    try:
        # UTF-8 only, as /api/v1 and RFC 8259 say: json.loads of bytes would guess UTF-16 or UTF-32 too.
        # "surrogatepass" lets the bytes of a lone surrogate through, to be refused by name below.
        body = json.loads(raw.decode("utf-8", "surrogatepass"), parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"Malformed JSON in request body: {exc}") from exc
    except RecursionError as exc:
        raise InvalidInput(validation.too_deep("request body")) from exc
    return validation.request_body(validation.require_object(body))


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _source(request: HttpRequest, what: str) -> str:
    user = getattr(request, "user", None)
    who = f" by {user.get_username()}" if user is not None and user.is_authenticated else ""
    return f"{what} from {request.META.get('REMOTE_ADDR', '?')}{who}"


@seed_view(("POST",))
def task_create(request: HttpRequest) -> HttpResponse:
    """A tracked task, stored exactly as sent, as in the reference service; with "execute": true,
    an executed one (its type must be executable; "node" may choose where it runs)."""
    body = json_body(request)
    validation.reject_unknown(body, _CREATE_FIELDS)
    node = body.get("node")
    if node is not None and not isinstance(node, str):
        raise InvalidInput("'node' must be a node name")
    task, _created = services.task_create(
        task_id=validation.task_id(body["task_id"]) if "task_id" in body else None,
        task_type=validation.task_type(body.get("task_type", "")),
        task_data=validation.json_object(body.get("task_data", {}), "task_data"),
        task_status=validation.status(body.get("task_status", "pending")),
        task_status_data=validation.json_object(body.get("task_status_data", {}), "task_status_data"),
        execute=validation.boolean(body.get("execute", False), "execute"),
        node=node or None,
        constraints=parse_constraints(body["constraints"]) if "constraints" in body else None,
        source=_source(request, "POST /task"),
    )
    return ok({"message": "Task created", "task_id": task.task_id})


@seed_view(("GET", "PUT", "DELETE"), node_methods=("GET",))
def task_detail(request: HttpRequest, task_id: str) -> HttpResponse:
    if request.method == "GET":
        task = selectors.task_get(task_id=task_id)
        permissions.seed_require_own_task(request, task)
        return ok(seed_task(task))
    if request.method == "DELETE":
        services.task_delete(task_id=task_id)
        return ok({"message": "Task deleted"})
    body = json_body(request)
    validation.reject_unknown(body, _PUT_FIELDS)
    if not body:
        raise InvalidInput(f"Nothing to update; send one or more of: {', '.join(_PUT_FIELDS)}")
    changes: dict[str, Any] = {}
    if "task_data" in body:
        changes["task_data"] = validation.json_object(body["task_data"], "task_data")
    if "task_type" in body:
        changes["task_type"] = validation.task_type(body["task_type"])
    if "task_status" in body:
        changes["task_status"] = validation.status(body["task_status"])
    if "task_status_data" in body:
        changes["task_status_data"] = validation.json_object(body["task_status_data"], "task_status_data")
    services.task_update(task_id=task_id, changes=changes, source=_source(request, "PUT /task"))
    return ok({"message": "Task updated", "modified_count": 1})


@seed_view(("GET",))
def task_list(request: HttpRequest) -> HttpResponse:
    params = request.GET
    validation.reject_unknown(params, _LIST_PARAMS)
    task_status = params.get("task_status")
    page = selectors.task_list_page(
        task_type=params.get("task_type"),
        task_status=validation.status_filter(task_status) if task_status is not None else None,
        updated_since=_int_param(params.get("updated_since"), "updated_since", minimum=0, maximum=_MAX_EPOCH),
        after=params.get("after") or None,
        limit=_int_param(params.get("limit"), "limit", minimum=1, maximum=settings.TASKHUB_MAX_PAGE_SIZE)
        or settings.TASKHUB_PAGE_SIZE,
    )
    next_url = None
    if page.next_cursor is not None:
        query = params.copy()
        query["after"] = page.next_cursor
        next_url = request.build_absolute_uri(f"{request.path}?{query.urlencode()}")
    return ok([seed_task(t) for t in page.tasks], next=next_url)


@seed_view(("POST",), node_methods=("POST",))
def task_update_push(request: HttpRequest) -> HttpResponse:
    body = json_body(request)
    validation.reject_unknown(body, _UPDATE_FIELDS)
    for required in ("task_id", "status"):
        if required not in body:
            raise InvalidInput(f"'{required}' is required")
    status_data = body.get("task_status_data")
    task_id = validation.task_id(body["task_id"])
    permissions.seed_require_own_task(request, task_id)
    run_id = body.get("run_id", "")
    if not isinstance(run_id, str) or len(run_id) > 36:
        raise InvalidInput("'run_id' must be the run id the pull API gave with the task")
    queued = services.task_update_push(
        task_id=task_id,
        status=validation.status(body["status"], "status"),
        task_status_data=validation.json_object(status_data, "task_status_data") if status_data is not None else None,
        source=_source(request, "POST /task_update"),
        reporter=permissions.node_of(getattr(request, "user", None)),
        run_id=run_id,
    )
    if not queued:
        return JsonResponse({"success": True, "message": f"Ignored: run {run_id!r} is not the task's current run"})
    return JsonResponse({"success": True, "message": "Task update pushed successfully"})


def _int_param(value: str | None, name: str, *, minimum: int, maximum: int | None = None) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except ValueError as exc:
        raise InvalidInput(f"'{name}' must be an integer, got {value!r}") from exc
    if number < minimum or (maximum is not None and number > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise InvalidInput(f"'{name}' must be {bound}, got {number}")
    return number
