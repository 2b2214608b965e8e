"""A task type's fields, offered from its task_data schema: the admin's add form (?task_type=<name>, an
input per property, assembled into task_data) and the browsable API's POST form (a skeleton body)."""

from __future__ import annotations

import html
import json
import re
from typing import Any

import pytest
from django import forms
from django.contrib.auth.models import User
from django.test import Client

from tasks_app.admin_type_forms import field_for
from tasks_app.fleet.services import cluster_ensure, node_register
from tasks_app.models import GlobalTask
from tasks_app.tasks import type_schema
from workers.protocol import specs

pytestmark = pytest.mark.django_db

ADD = "/admin/tasks_app/globaltask/add/"
TASKS = "/api/v1/tasks/"


@pytest.fixture
def staff(client: Client) -> Client:
    client.force_login(User.objects.create_superuser("root", "", "pw-for-tests-only"))
    return client


@pytest.fixture
def node1() -> None:
    node_register(cluster=cluster_ensure(name="demo"), name="node1")


def _field_row(content: bytes, name: str) -> str:
    """The admin's row for one form field (its label, input, errors and help text)."""
    page = content.decode()
    start = page.index(f'field-{name}"') if f'field-{name}"' in page else page.index(f"field-{name} ")
    end = page.find('<div class="form-row', start)
    return page[start : end if end != -1 else len(page)]


def _typed_post(**fields: str) -> dict[str, str]:
    """What the browser posts from the typed add form (the disabled task_type input is not posted)."""
    data = {"task_status": "pending", "task_data": "{}", "task_status_data": "{}", "node": ""}
    data.update({"history-TOTAL_FORMS": "0", "history-INITIAL_FORMS": "0", "history-MIN_NUM_FORMS": "0",
                 "history-MAX_NUM_FORMS": "1000"})  # fmt: skip
    data.update(fields)
    return data


# --- the admin's add form -----------------------------------------------------------------------


def test_the_add_page_lists_the_types_and_a_typed_form_shows_their_fields(staff: Client) -> None:
    page = staff.get(ADD)
    assert page.status_code == 200
    for name in specs.known():
        assert f'href="?task_type={name}"'.encode() in page.content
    assert b'name="task_data"' in page.content  # the free-form add form is still the default

    page = staff.get(ADD, {"task_type": "block_alloc"})
    assert page.status_code == 200
    for name in ("cluster", "node", "blocks"):
        row = _field_row(page.content, f"task_data__{name}")
        assert f'name="task_data__{name}"' in row
        assert 'class="required"' in row  # required in the schema: a required input
    assert 'type="number"' in _field_row(page.content, "task_data__blocks")
    # The schema's description is the help text (escaped like everything else on the page).
    assert "1-64 letters, digits, &#x27;.&#x27;" in _field_row(page.content, "task_data__cluster")
    assert re.search(r'<input type="checkbox" name="execute"[^>]* checked>', _field_row(page.content, "execute"))
    assert "disabled" in _field_row(page.content, "task_type")

    page = staff.get(ADD, {"task_type": "volume_create"})
    kind = _field_row(page.content, "task_data__type")
    assert "<select" in kind and 'class="required"' not in kind  # an enum, optional, with a default
    options = re.findall(r'<option value="([^"]*)"( selected)?>', kind)
    assert [(html.unescape(v), bool(s)) for v, s in options] == [
        ("", False), ('"disperse"', False), ('"distribute"', False), ('"replicate"', True)
    ]  # fmt: skip
    units = _field_row(page.content, "task_data__storage_units")
    assert "<textarea" in units
    placeholder = re.search(r'placeholder="([^"]*)"', units)
    assert placeholder and json.loads(html.unescape(placeholder.group(1))) == [{"node": "", "path": None}]


def test_creating_through_the_typed_fields_stores_the_assembled_task_data(staff: Client, node1: None) -> None:
    resp = staff.post(f"{ADD}?task_type=block_alloc", _typed_post(
        task_data__cluster="demo", task_data__node="node1", task_data__blocks="4", execute="on",
    ))  # fmt: skip
    assert resp.status_code == 302, resp.content[:3000]
    ran = GlobalTask.objects.get(task_type="block_alloc")
    assert ran.task_data == {"cluster": "demo", "node": "node1", "blocks": 4}  # an integer, not "4"
    assert (ran.task_status, ran.node) == ("pending", "node1") and ran.run_id
    assert ran.history.filter(to_status="pending", source="admin by root").exists()

    # A tracked record of a type's fields: nothing runs; optional fields left empty are left out, the
    # enum comes back as its value, the JSON field as JSON, "other" keys are kept.
    units = '[{"node": "node1"}, {"node": "node2", "path": "disks/b"}]'
    resp = staff.post(f"{ADD}?task_type=volume_create", _typed_post(
        task_data__cluster="demo", task_data__name="vol1", task_data__type='"distribute"',
        task_data__storage_units=units, task_data='{"note": "by hand"}',
    ))  # fmt: skip
    assert resp.status_code == 302, resp.content[:3000]
    record = GlobalTask.objects.get(task_type="volume_create")
    assert record.task_data == {
        "note": "by hand", "cluster": "demo", "name": "vol1", "type": "distribute",
        "storage_units": [{"node": "node1"}, {"node": "node2", "path": "disks/b"}],
    }  # fmt: skip
    assert (record.node, record.run_id, record.task_status) == ("", "", "pending")


def test_a_refused_value_is_shown_on_its_input(staff: Client, node1: None) -> None:
    url = f"{ADD}?task_type=block_alloc"
    post = _typed_post(task_data__cluster="demo", task_data__node="node1", execute="on")
    # The type's validator: its message, on the input it names, not a 500.
    resp = staff.post(url, {**post, "task_data__blocks": "0"})
    assert resp.status_code == 200
    row = _field_row(resp.content, "task_data__blocks")
    assert "errorlist" in row and "task_data.blocks: must be a whole number from 1 to 2147483648" in row
    # The form's own check of an input's type.
    resp = staff.post(url, {**post, "task_data__blocks": "many"})
    assert resp.status_code == 200 and "Enter a whole number." in _field_row(resp.content, "task_data__blocks")
    # A required field left empty.
    resp = staff.post(url, {**post, "task_data__blocks": "4", "task_data__node": ""})
    assert resp.status_code == 200 and "This field is required." in _field_row(resp.content, "task_data__node")
    # A key set twice (its input and the free-form part).
    resp = staff.post(url, {**post, "task_data__blocks": "4", "task_data": '{"blocks": 5}'})
    assert resp.status_code == 200 and "set it once" in _field_row(resp.content, "task_data__blocks")
    # A create-time check against the database (the node is not in that cluster): a form error too.
    resp = staff.post(url, {**post, "task_data__blocks": "4", "task_data__cluster": "other"})
    assert resp.status_code == 200 and b"errornote" in resp.content
    # The disabled type cannot be swapped by posting another.
    resp = staff.post(url, {**post, "task_data__blocks": "0", "task_type": "noop"})
    assert resp.status_code == 200 and "task_data.blocks" in _field_row(resp.content, "task_data__blocks")
    assert not GlobalTask.objects.exists()


def test_the_free_form_path_still_works(staff: Client, node1: None) -> None:
    # No type, or a type with no schema (here, not executable at all): the JSON textarea, type filled in.
    page = staff.get(ADD, {"task_type": "note"})
    assert page.status_code == 200
    assert 'value="note"' in _field_row(page.content, "task_type") and b"task_data__" not in page.content
    post = _typed_post(task_type="note", task_data='{"free": ["form"]}')
    resp = staff.post(f"{ADD}?task_type=note", post)
    assert resp.status_code == 302, resp.content[:3000]
    assert GlobalTask.objects.get(task_type="note").task_data == {"free": ["form"]}
    resp = staff.post(ADD, _typed_post(task_type="noop", task_data='{"node": "node1"}', execute="on"))
    assert resp.status_code == 302, resp.content[:3000]
    assert GlobalTask.objects.get(task_type="noop").node == "node1"


def test_every_built_in_type_gets_its_fields_on_both_surfaces(staff: Client) -> None:
    typed = [name for name in specs.known() if (spec := specs.get(name)) is not None and spec.schema is not None]
    assert {"noop", "block_alloc", "volume_create", "vdag_creation"} <= set(typed)
    for name in typed:  # (types registered by other tests' handler modules publish no schema)
        spec = specs.get(name)
        assert spec is not None and spec.schema is not None
        page = staff.get(ADD, {"task_type": name})
        assert page.status_code == 200
        for prop in spec.schema["properties"]:
            assert f'name="task_data__{prop}"'.encode() in page.content, (name, prop)
        body = _raw_post_content(staff.get(TASKS, {"task_type": name}, HTTP_ACCEPT="text/html").content)
        assert list(body["task_data"]) == list(spec.schema["properties"]), name


def test_what_the_add_page_shows_is_escaped(staff: Client) -> None:
    page = staff.get(ADD, {"task_type": "<b>x</b>"})
    assert page.status_code == 200
    assert b"<b>x</b>" not in page.content and b"&lt;b&gt;x&lt;/b&gt;" in page.content


def test_each_schema_kind_gets_its_input() -> None:
    schema = {
        "type": "object",
        "properties": {
            "on": {"type": "boolean"},
            "maybe": {"type": "boolean"},
            "ratio": {"type": "number", "description": "<0..1>"},
            "level": {"enum": [1, 2, 3]},
            "opts": {"type": "object"},
            "tag": {"type": ["string", "null"]},
        },
        "required": ["on", "ratio", "level"],
    }
    props = type_schema.properties(schema)
    form_class: type[forms.Form] = type("F", (forms.Form,), {p.name: field_for(p) for p in props})
    assert isinstance(form_class.base_fields["on"], forms.BooleanField)
    assert isinstance(form_class.base_fields["maybe"], forms.NullBooleanField)
    assert form_class.base_fields["ratio"].help_text == "&lt;0..1&gt;"  # the admin shows help text as HTML
    form = form_class({"on": "on", "maybe": "", "ratio": "0.5", "level": "2", "opts": '{"a": 1}', "tag": ""})
    assert form.is_valid(), form.errors
    assert form.cleaned_data == {"on": True, "maybe": None, "ratio": 0.5, "level": 2, "opts": {"a": 1}, "tag": None}
    form = form_class({"ratio": "x", "level": "4", "opts": "[1]"})
    assert not form.is_valid()
    assert set(form.errors) == {"ratio", "level", "opts"} and form.errors["opts"] == ["must be a JSON object"]
    assert type_schema.skeleton(schema) == {"on": False, "maybe": False, "ratio": 0, "level": 1, "opts": {},
                                            "tag": None}  # fmt: skip


# --- the browsable API ---------------------------------------------------------------------------


def _raw_post_content(content: bytes) -> Any:
    """The initial JSON of the browsable API's raw-data POST form (<textarea name="_content">)."""
    page = content.decode()
    assert page.count('id="post-generic-content-form"') == 1
    post_form = page[page.index('id="post-generic-content-form"') :]
    text = re.search(r'<textarea name="_content"[^>]*>(.*?)</textarea>', post_form, re.S)
    assert text is not None
    return json.loads(html.unescape(text.group(1)))


def test_the_browsable_post_form_starts_from_the_types_fields(api_client: Client) -> None:
    page = api_client.get(TASKS, {"task_type": "volume_create"}, HTTP_ACCEPT="text/html")
    assert page.status_code == 200
    body = _raw_post_content(page.content)
    spec = specs.get("volume_create")
    assert spec is not None and spec.schema is not None
    assert body["task_type"] == "volume_create" and body["execute"] is True
    assert list(body["task_data"]) == list(spec.schema["properties"])  # every property, in order
    assert body["task_data"] == {"cluster": "", "name": "", "type": "replicate",
                                 "storage_units": [{"node": "", "path": None}]}  # fmt: skip
    assert _raw_post_content(api_client.get(TASKS, {"task_type": "block_alloc"}, HTTP_ACCEPT="text/html").content) == {
        "task_type": "block_alloc", "execute": True, "task_data": {"cluster": "", "node": "", "blocks": 1}
    }  # fmt: skip
    for name in specs.known():
        assert f'href="{TASKS}?task_type={name}"'.encode() in page.content

    # Without a type: DRF's own empty body; with a name that is not executable: a tracked task's.
    plain = _raw_post_content(api_client.get(TASKS, HTTP_ACCEPT="text/html").content)
    assert "task_type" in plain and plain.get("task_data") != {"cluster": ""}
    assert _raw_post_content(api_client.get(TASKS, {"task_type": "<i>note"}, HTTP_ACCEPT="text/html").content) == {
        "task_type": "<i>note", "task_data": {}
    }  # fmt: skip


def test_the_json_renderer_and_other_pages_are_unaffected(api_client: Client) -> None:
    from tasks_app.tasks.services import task_create

    typed, _ = task_create(task_type="volume_create", task_data={"x": 1})
    task_create(task_type="note")
    resp = api_client.get(TASKS, {"task_type": "volume_create"}, HTTP_ACCEPT="application/json")
    assert resp.status_code == 200 and resp["Content-Type"] == "application/json"
    assert [t["task_id"] for t in resp.json()["results"]] == [typed.task_id]  # still the list's filter
    # A task's own page has no POST form and no type links.
    page = api_client.get(f"{TASKS}{typed.task_id}/", {"format": "api"})
    assert page.status_code == 200 and b"task-types" not in page.content


def test_a_reader_gets_no_post_form_and_no_links(client: Client) -> None:
    client.force_login(User.objects.create_user("reader", password="pw-for-tests-only"))
    page = client.get(TASKS, {"task_type": "noop"}, HTTP_ACCEPT="text/html")
    assert page.status_code == 200
    assert b'name="_content"' not in page.content and b"task-types" not in page.content
