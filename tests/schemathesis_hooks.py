"""Schemathesis hooks for tests/test_schemathesis.py (loaded by tests/schemathesis.toml).

Each one is narrow and says why: a generated request that no schema can make valid, or one that would
spend the run's time budget waiting. Nothing here hides a server error, a response the schema does not
describe, or an invalid request the server accepted.
"""

from __future__ import annotations

from typing import Any

import schemathesis

# Long polls (?wait=, up to 60 s) are tested in tests/test_longpoll_serving.py. Here a generated wait of
# a minute would hold a server thread and the run's whole budget; a short one still takes the same path.
MAX_WAIT = 0.2

# What a schema-valid request may be refused for, by nature, where the refusal is a 400:
# - `after`: an opaque cursor (base64 of a position) is one only if this server issued it;
# - creating an executed task (`execute: true`, naming a `node`, or stating `constraints`): the task type
#   must be executable,
#   task_data must be that type's payload, and the node one of its participants; rules of each type
#   (tasks_app/families/) that the generic create's schema cannot carry;
# - POST /api/v1/nodes/ naming a cluster (by name) that does not exist.
_CREATES = {("POST", "/task"), ("POST", "/api/v1/tasks/")}
# - a node's labels or capacity whose names break their pattern: the schema says it in words only, since
#   OpenAPI 3.0 has no propertyNames, so schemathesis generates any name (tasks_app/fleet/placement.py).
_NAMED_KEYS = {"labels", "capacity"}
_REQUEST_LINE_TOO_LARGE = "Request Line is too large"
_NAME_REFUSED = "is not a"  # "... is not a label name (...)", "... is not a resource name (...)"


def _executed_create(case: Any) -> bool:
    body = case.body
    return isinstance(body, dict) and (body.get("execute") is True or bool(body.get("node")) or _constrained(body))


def _constrained(body: dict[str, Any]) -> bool:
    """Placement constraints are for an executed task only: on a tracked one they are refused (400)."""
    constraints = body.get("constraints")
    return isinstance(constraints, dict) and any(constraints.get(k) for k in ("labels", "capacity"))


def _refused_by_nature(case: Any, response: Any) -> bool:
    where = (case.method.upper(), case.operation.path)
    if isinstance(case.query, dict) and case.query.get("after") not in (None, ""):
        return True
    if where in _CREATES and _executed_create(case):
        return True
    if where == ("POST", "/api/v1/nodes/") or (where[0] == "PATCH" and where[1].startswith("/api/v1/nodes/")):
        try:
            errors = response.json()
        except ValueError:
            return False
        return isinstance(errors, dict) and bool(errors) and all(_by_nature(k, v) for k, v in errors.items())
    return False


def _by_nature(field: str, messages: Any) -> bool:
    if field == "cluster":
        return True
    texts = messages if isinstance(messages, list) else [messages]
    return field in _NAMED_KEYS and all(_NAME_REFUSED in str(t) for t in texts)


# POST /api/v1/tasks/bulk/ answers each item on its own (README "Bulk create"): an item that breaks the
# create's schema is that item's error in a 200, and the other items are created. Such a 200 is no
# "schema-violating request accepted" (ST201) when the body around the items is well formed and every
# item the answer created or found existing is an object with the create's fields only.
_BULK = ("POST", "/api/v1/tasks/bulk/")
_CREATE_FIELDS = {
    "task_id", "task_type", "task_data", "task_status", "task_status_data", "execute", "node", "constraints",
}  # fmt: skip


def _bulk_items_refused(case: Any, response: Any) -> bool:
    if (case.method.upper(), case.operation.path) != _BULK or response.status_code != 200:
        return False
    body = case.body
    if not (isinstance(body, dict) and set(body) == {"tasks"} and isinstance(body["tasks"], list) and body["tasks"]):
        return False
    try:
        answer = response.json()
    except ValueError:
        return False
    results = answer.get("results") if isinstance(answer, dict) else None
    if not isinstance(results, list) or len(results) != len(body["tasks"]) or not answer.get("failed"):
        return False
    for item, result in zip(body["tasks"], results, strict=True):
        if not result.get("errors") and not (isinstance(item, dict) and set(item) <= _CREATE_FIELDS):
            return False
    return True


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """Keep every failure but "schema-valid request rejected" (ST202) with a 400 for the reasons above,
    and a bulk create's 200 that refused the items breaking the schema (ST201, above), and the web server's
    own refusal of a request line longer than its limit (gunicorn's limit_request_line, 4094 bytes): it
    answers before the app, in its own HTML, for a generated query string of many kilobytes."""
    if failure.code == "ST201" and _bulk_items_refused(case, response):
        return False
    if response.status_code == 400 and _REQUEST_LINE_TOO_LARGE in (getattr(response, "text", "") or ""):
        return False
    return not (failure.code == "ST202" and response.status_code == 400 and _refused_by_nature(case, response))


# The event stream (GET /api/v1/events/) stays open for TASKHUB_EVENTS_MAX_SECONDS unless asked for less;
# tests/test_events.py tests it. Here every generated stream ends after a moment, and takes the same path.
MAX_STREAM = 0.2


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    if case.operation.path == "/api/v1/events/":
        case.query = (
            {**(case.query or {}), "timeout": MAX_STREAM} if isinstance(case.query, dict | None) else case.query
        )
        return case
    if case.operation.path == "/api/v1/tasks/{id}/" and isinstance(case.query, dict):
        raw = case.query.get("wait")
        if raw is None:
            return case
        try:
            wait = float(raw)
        except (TypeError, ValueError):
            return case
        if MAX_WAIT < wait <= 60:
            case.query["wait"] = MAX_WAIT
    return case
