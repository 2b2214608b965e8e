"""Typed task types: each built-in type's task_data JSON Schema says what its validate() accepts, and
/api/v1/task-types/ (and the OpenAPI document) publish them.

hypothesis-jsonschema is not installed, so the schema-vs-validator check is by examples: a valid base
payload per type, every top-level field mutated to a set of wrong and edge values, and hand-written cases
for the nested parts. For each, validate() and the schema (the jsonschema library) must agree, but for the
few rules a schema cannot state, listed in VALIDATOR_ONLY.
"""

from __future__ import annotations

import copy
import io
import json
import re
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # comes with schemathesis
import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from hypothesis import given
from hypothesis import strategies as st

from tasks_app.ops import accounts
from workers.families.volumes import RESERVED, UNIT_PATH_PATTERN, check_unit_path
from workers.protocol import specs
from workers.protocol.errors import PayloadError

BUILT_IN = [
    "noop",
    "block_alloc",
    "block_free",
    "vdag_creation",
    "vdag_deletion",
    "cluster_infra_creation",
    "cluster_infra_remove",
    "node_addition",
    "node_removal",
    "volume_create",
    "volume_start",
    "volume_stop",
    "volume_delete",
]

VERTICES = [{"id": "a", "allocation": "t1"}, {"id": "b", "allocation": "t2"}]
BASE: dict[str, dict[str, Any]] = {
    "noop": {"node": "node1"},
    "block_alloc": {"cluster": "demo", "node": "node1", "blocks": 8},
    "block_free": {"cluster": "demo", "node": "node1", "allocation": "task:1"},
    "vdag_creation": {"cluster": "demo", "node": "node1", "name": "g", "vertices": VERTICES, "edges": [["a", "b"]]},
    "vdag_deletion": {"cluster": "demo", "name": "g", "node": "node1"},
    "cluster_infra_creation": {"cluster": "demo", "nodes": ["node1", "node2"]},
    "cluster_infra_remove": {"cluster": "demo", "nodes": ["node1"]},
    "node_addition": {"cluster": "demo", "node": "node1"},
    "node_removal": {"cluster": "demo", "node": "node1"},
    "volume_create": {"cluster": "demo", "name": "vol1", "storage_units": [{"node": "node1"}, {"node": "node2"}]},
    "volume_start": {"cluster": "demo", "name": "vol1"},
    "volume_stop": {"cluster": "demo", "name": "vol1"},
    "volume_delete": {"cluster": "demo", "name": "vol1"},
}

# Values every top-level field is set to in turn (and the field left out), on top of the base payload.
MUTATIONS: list[Any] = [
    None, True, 0, 1, -1, 2**31, 2**31 + 1, 1.5, "", "node1", "a" * 64, "a" * 65, "-x", "bad name", "x:y",
    "node1\n", [], ["node1"], ["node1", "node1"], ["bad name"], [{}], {}, {"node": "node1"},
]  # fmt: skip

UNITS_1 = [{"node": "n1"}]
UNITS_3 = [{"node": "n1"}, {"node": "n2"}, {"node": "n3"}]
UNITS_4 = [{"node": f"n{i}"} for i in range(4)]
UNITS_17 = [{"node": f"n{i}"} for i in range(17)]
UNITS_65 = [{"node": f"n{i}"} for i in range(65)]
VOL = {"cluster": "demo", "name": "vol1"}

# (type, task_data): cases for the nested parts, valid and invalid; validate() and the schema must agree.
NESTED: list[tuple[str, dict[str, Any]]] = [
    ("volume_create", {**VOL, "storage_units": UNITS_3}),
    ("volume_create", {**VOL, "storage_units": UNITS_4}),  # replicate by default: 2 to 3
    ("volume_create", {**VOL, "storage_units": UNITS_1}),
    ("volume_create", {**VOL, "type": "replicate", "storage_units": UNITS_4}),
    ("volume_create", {**VOL, "type": "disperse", "storage_units": UNITS_3}),
    ("volume_create", {**VOL, "type": "disperse", "storage_units": UNITS_1}),
    ("volume_create", {**VOL, "type": "disperse", "storage_units": UNITS_17}),
    ("volume_create", {**VOL, "type": "distribute", "storage_units": UNITS_1}),
    ("volume_create", {**VOL, "type": "distribute", "storage_units": UNITS_65}),
    ("volume_create", {**VOL, "type": "mirror", "storage_units": UNITS_3}),
    ("volume_create", {**VOL, "type": None, "storage_units": UNITS_3}),
    ("volume_create", {**VOL, "type": ["replicate"], "storage_units": UNITS_3}),  # was a TypeError (a 500)
    ("volume_create", {**VOL, "storage_units": [{"node": "n1"}, "n2"]}),
    ("volume_create", {**VOL, "storage_units": [{"node": "n1"}, {}]}),
    ("volume_create", {**VOL, "storage_units": [{"node": "n1"}, {"node": "n2", "size": 1}]}),
    ("volume_create", {**VOL, "storage_units": [{"node": "n1"}, {"node": "bad name"}]}),
    ("volume_create", {**VOL, "storage_units": [{"node": "n1", "path": None}, {"node": "n2", "path": "b/c"}]}),
    ("volume_create", {**VOL, "storage_units": [{"node": "n1", "path": "./x"}, {"node": "n2", "path": 5}]}),
    ("volume_create", {**VOL, "storage_units": [{"node": "n1", "path": "/abs"}, {"node": "n2"}]}),
    ("volume_create", {**VOL, "storage_units": [{"node": "n1", "path": "a/../b"}, {"node": "n2"}]}),
    ("volume_create", {**VOL, "storage_units": [{"node": "n1", "path": "./volumes/x"}, {"node": "n2"}]}),
    ("volume_create", {**VOL, "storage_units": [{"node": "n1", "path": "volumes.d"}, {"node": "n2"}]}),
    ("volume_create", {**VOL, "storage_units": [{"node": "n1", "path": "."}, {"node": "n2"}]}),
    ("volume_create", {**VOL, "storage_units": [{"node": "n1", "path": ""}, {"node": "n2"}]}),
    ("vdag_creation", {**BASE["vdag_creation"], "edges": []}),
    ("vdag_creation", {k: v for k, v in BASE["vdag_creation"].items() if k != "edges"}),
    ("vdag_creation", {**BASE["vdag_creation"], "edges": [["a"]]}),
    ("vdag_creation", {**BASE["vdag_creation"], "edges": [["a", "b", "a"]]}),
    ("vdag_creation", {**BASE["vdag_creation"], "edges": [["a", 1]]}),
    ("vdag_creation", {**BASE["vdag_creation"], "edges": ["ab"]}),
    (
        "vdag_creation",
        {**BASE["vdag_creation"], "vertices": [{"id": "a", "allocation": "t", "label": "x"}], "edges": []},
    ),
    ("vdag_creation", {**BASE["vdag_creation"], "vertices": [{"id": "", "allocation": "t"}], "edges": []}),
    ("vdag_creation", {**BASE["vdag_creation"], "vertices": [{"id": 1, "allocation": "t"}], "edges": []}),
    ("vdag_creation", {**BASE["vdag_creation"], "vertices": [{"id": "a"}], "edges": []}),
    ("vdag_creation", {**BASE["vdag_creation"], "vertices": [{"id": "a", "allocation": 7}], "edges": []}),
    ("vdag_creation", {**BASE["vdag_creation"], "vertices": ["a"], "edges": []}),
    ("vdag_deletion", {"cluster": "demo", "name": "g"}),
    ("vdag_deletion", {"cluster": "demo", "name": "g", "node": None}),
    ("block_free", {"cluster": "demo", "node": "node1", "allocation": "a" * 65}),
]

# What validate() refuses and a JSON Schema cannot: rules across items, and a float with a whole value
# (JSON Schema's "integer" accepts 8.0).
VALIDATOR_ONLY: list[tuple[str, dict[str, Any], str]] = [
    ("vdag_creation", {**BASE["vdag_creation"], "vertices": [*VERTICES, VERTICES[0]]}, "unique"),
    ("vdag_creation", {**BASE["vdag_creation"], "edges": [["a", "z"]]}, "pair of vertex ids"),
    ("vdag_creation", {**BASE["vdag_creation"], "edges": [["a", "b"], ["b", "a"]]}, "cycle"),
    ("volume_create", {**VOL, "storage_units": [{"node": "n", "path": "p"}, {"node": "n", "path": "./p"}]}, "repeats"),
    ("block_alloc", {**BASE["block_alloc"], "blocks": 8.0}, "whole number"),
]


def schema_of(task_type: str) -> dict[str, Any]:
    spec = specs.get(task_type)
    assert spec is not None and spec.schema is not None, task_type
    return spec.schema


def validator_accepts(task_type: str, data: dict[str, Any]) -> bool:
    spec = specs.get(task_type)
    assert spec is not None
    try:
        spec.validate(copy.deepcopy(data))
    except PayloadError:
        return False
    return True


def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Any:
    """JSON Schema's `pattern` as its clients read it (ECMA-262), where `$` is the end of the string. The
    jsonschema library uses Python's re, whose `$` also matches before a final newline."""
    if isinstance(instance, str) and not re.search(re.sub(r"(?<!\\)\$", r"\\Z", pattern), instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


# Draft 2020-12 with ECMA-262's `$`.
Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": _ecma_pattern})


def schema_accepts(task_type: str, data: dict[str, Any]) -> bool:
    return bool(Validator(schema_of(task_type)).is_valid(data))


def mutated(task_type: str) -> list[dict[str, Any]]:
    base = BASE[task_type]
    fields = sorted({*base, *schema_of(task_type)["properties"]})
    out = [base, {**base, "extra": {"kept": True}}]  # unknown fields are kept and ignored
    for field in fields:
        out.append({k: v for k, v in base.items() if k != field})
        out += [{**base, field: value} for value in MUTATIONS]
    return out


def test_every_built_in_type_has_a_valid_schema_and_is_known() -> None:
    assert set(BUILT_IN) <= set(specs.known())
    for task_type in BUILT_IN:
        schema = schema_of(task_type)
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["type"] == "object" and schema["additionalProperties"] is True


@pytest.mark.parametrize("task_type", BUILT_IN)
def test_the_schema_accepts_exactly_what_validate_accepts(task_type: str) -> None:
    cases = mutated(task_type) + [data for t, data in NESTED if t == task_type]
    accepted = 0
    for data in cases:
        by_validator = validator_accepts(task_type, data)
        assert schema_accepts(task_type, data) == by_validator, (task_type, data, by_validator)
        accepted += by_validator
    assert 0 < accepted < len(cases)  # both sides of the line were tried


@pytest.mark.parametrize(("task_type", "data", "message"), VALIDATOR_ONLY)
def test_rules_beyond_the_schema_are_left_to_validate(task_type: str, data: dict[str, Any], message: str) -> None:
    assert schema_accepts(task_type, data)
    spec = specs.get(task_type)
    assert spec is not None
    with pytest.raises(PayloadError, match=message):
        spec.validate(data)


SEGMENTS = st.sampled_from([".", "..", "/", "a", "b.", "..a", "\n", *sorted(RESERVED), "volumesx", ".taskhubx"])


@given(st.lists(SEGMENTS, max_size=6).map("".join))
def test_the_unit_path_pattern_is_check_unit_path(path: str) -> None:
    try:
        check_unit_path(path, "path")
        valid = True
    except PayloadError:
        valid = False
    assert bool(Validator({"type": "string", "pattern": UNIT_PATH_PATTERN}).is_valid(path)) == valid


# --- the API ---------------------------------------------------------------------------------------


@pytest.fixture
def reader() -> Client:
    """A plain account: reads /api/v1, writes nothing."""
    user = User.objects.create_user("reader", password="reader-pw-for-tests")
    return Client(HTTP_AUTHORIZATION=f"Token {accounts.token_issue(user=user)}")


@pytest.mark.django_db
def test_the_list_names_every_executable_type_with_its_schema(reader: Client) -> None:
    resp = reader.get("/api/v1/task-types/")
    assert resp.status_code == 200, resp.content
    items = {item["name"]: item for item in resp.json()}
    assert list(items) == specs.known()
    for name in BUILT_IN:
        assert items[name]["schema"] == schema_of(name)
    volume = items["volume_create"]
    assert volume == {
        "name": "volume_create",
        "description": "Creates the volume's storage units on every participating node.",
        "schema": schema_of("volume_create"),
        "order_key": "volume:<cluster>:<name>",
        "cancellable": True,
        "retryable": True,
        "retry_limit": 3,
        "compensates": True,
        "reassignable": True,
        "run_timeout": None,
    }
    noop = items["noop"]
    assert (noop["order_key"], noop["compensates"], noop["reassignable"]) == (None, False, False)
    assert noop["schema"]["required"] == ["node"]
    assert items["block_free"]["order_key"] == "block:<allocation>"
    assert (items["volume_delete"]["compensates"], items["volume_stop"]["compensates"]) == (False, True)


@pytest.mark.django_db
def test_settings_overrides_show(reader: Client, settings: Any) -> None:
    settings.TASKHUB_RETRY_LIMITS = {"noop": 0}
    settings.TASKHUB_RUN_TIMEOUTS = {"noop": 30}
    body = reader.get("/api/v1/task-types/noop/").json()
    assert (body["retryable"], body["retry_limit"], body["run_timeout"]) == (False, 0, 30.0)


@pytest.mark.django_db
def test_retrieve_and_unknown_name(reader: Client, api_client: Client) -> None:
    resp = reader.get("/api/v1/task-types/block_alloc/")
    assert resp.status_code == 200
    body = resp.json()
    assert body["name"] == "block_alloc" and body["order_key"] is None
    assert body["schema"]["properties"]["blocks"] == {"type": "integer", "minimum": 1, "maximum": 2**31}
    missing = reader.get("/api/v1/task-types/invoice/")
    assert missing.status_code == 404
    assert "invoice" in missing.json()["detail"] and "volume_create" in missing.json()["detail"]
    assert reader.post("/api/v1/task-types/", "{}", content_type="application/json").status_code == 403
    assert api_client.post("/api/v1/task-types/", "{}", content_type="application/json").status_code == 405  # read-only


@pytest.mark.django_db
def test_anonymous_is_refused() -> None:
    resp = Client().get("/api/v1/task-types/")
    assert resp.status_code == 401
    assert "credentials" in resp.json()["detail"]


@pytest.mark.django_db
def test_the_openapi_document_carries_the_schemas(api_client: Client) -> None:
    resp = api_client.get("/api/schema/?format=json")
    assert resp.status_code == 200
    document = json.loads(resp.content)
    components = document["components"]["schemas"]
    volume = components["TaskData_volume_create"]
    units = volume["properties"]["storage_units"]
    assert units["items"]["properties"]["path"]["nullable"] is True  # OpenAPI 3.0's null
    assert units["items"]["properties"]["path"]["type"] == "string"
    assert volume["required"] == ["cluster", "name", "storage_units"]
    assert {f"TaskData_{name}" for name in BUILT_IN} <= set(components)
    assert "/api/v1/task-types/{name}/" in document["paths"]
    listed = document["paths"]["/api/v1/task-types/"]["get"]["responses"]["200"]["content"]["application/json"]
    assert listed["schema"] == {"type": "array", "items": {"$ref": "#/components/schemas/TaskType"}}


def test_the_openapi_document_validates() -> None:
    """drf-spectacular's own check of the whole document against the OpenAPI 3.0 specification, warnings
    counted as failures (a keyword 3.0 does not have, such as propertyNames, fails it)."""
    out = io.StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", "--format", "openapi-json", stdout=out)
    document = json.loads(out.getvalue())
    assert document["openapi"].startswith("3.0")
    assert "propertyNames" not in out.getvalue()
