"""Bulk create (POST /api/v1/tasks/bulk/, tasks_app/tasks/bulk.py, `taskhub task create-many`): each item
judged as a single create, answered on its own; the valid ones in one transaction with their history;
the executed ones published once it commits."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis
from django.contrib.auth.models import User
from django.db import transaction
from django.test import Client
from pytest_django.live_server_helper import LiveServer
from typer.testing import CliRunner

from cli.main import app as cli_app
from taskhub.celery import app as celery_app
from tasks_app.fleet.services import cluster_ensure, node_register
from tasks_app.models import Cluster, GlobalTask, Node, TaskStatusChange
from tasks_app.ops import accounts
from tasks_app.tasks import dispatch
from tasks_app.tasks.bulk import NewTaskSpec, Refused, task_create_many
from tasks_app.tasks.services import task_create
from tasks_app.tasks.transitions import EXISTS, NewTask, task_transition_new_many
from tests.conftest import database_url
from tests.helpers import start_manage, start_node_worker, stop, wait_until
from workers.protocol import payload, specs
from workers.protocol.queues import node_queue
from workers.protocol.status import Verdict

pytestmark = [pytest.mark.django_db, pytest.mark.redis]

URL = "/api/v1/tasks/bulk/"
RUN = uuid.uuid4().hex[:6]
NODE = f"bulk{RUN}-n1"  # unique per run: the test's queues are its own
PLAIN = "bulk_test_record"  # not an executable type: a tracked record


def _validate_ordered(data: dict[str, Any]) -> dict[str, Any]:
    payload.name(data, "node")
    payload.name(data, "key")
    return data


# A type with an ordering key, as the families have (volumes, vDAGs): tasks of one key run one at a time.
# Registered in this process only: the server side needs nothing else to accept and place it.
specs.register(
    "bulk_test_ordered",
    validate=_validate_ordered,
    participants=payload.one_node,
    order_key=lambda d: f"bulk-test:{d['key']}",
)(lambda ctx, data: {})


@pytest.fixture(autouse=True)
def nodes(redis_stream: redis.Redis) -> Iterator[Cluster]:
    cluster = cluster_ensure(name=f"bulk{RUN}")
    node_register(cluster=cluster, name=NODE)
    node_register(cluster=cluster, name=f"{NODE}-pull", transport=Node.Transport.PULL)
    yield cluster
    with celery_app.connection_for_write() as conn:  # what a test published, for a node that never ran here
        conn.default_channel.client.delete(node_queue(NODE))  # type: ignore[attr-defined]


def queued_runs(node: str = NODE) -> list[str]:
    """The run ids waiting in the node's queue, oldest first (a worker takes from the tail)."""
    with celery_app.connection_for_write() as conn:
        raw: list[bytes] = conn.default_channel.client.lrange(node_queue(node), 0, -1)  # type: ignore[attr-defined]
    return [json.loads(m)["headers"]["id"] for m in reversed(raw)]


def token_client(key: str) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Token {key}")


@pytest.fixture
def service() -> Client:
    return token_client(accounts.token_issue(user=accounts.service_account_ensure(name="bulk-service")))


def post(client: Client, body: Any, path: str = URL) -> Any:
    return client.post(path, json.dumps(body), content_type="application/json")


def noop(**extra: Any) -> dict[str, Any]:
    return {"task_type": "noop", "task_data": {"node": NODE}, **extra}


def history(task_id: str) -> list[tuple[str, str, str]]:
    return list(
        TaskStatusChange.objects.filter(task_id=task_id)
        .values_list("from_status", "to_status", "source")
        .order_by("id")
    )


# --- the answer, item by item ---------------------------------------------------------------------------


def test_every_item_created_in_order_with_its_history(service: Client) -> None:
    items = [
        {"task_id": "bulk-a", "task_type": PLAIN, "task_data": {"step": 1}},
        {"task_type": PLAIN, "task_data": {"step": 2}, "task_status": "completed", "task_status_data": {"ok": 1}},
        {"task_id": "bulk-c", "task_type": "noop", "task_data": {"node": NODE}},
    ]
    resp = post(service, {"tasks": items})
    assert resp.status_code == 201, resp.content
    body = resp.json()
    assert (body["created"], body["existing"], body["failed"]) == (3, 0, 0)
    assert [(r["index"], r["created"], "errors" in r) for r in body["results"]] == [
        (0, True, False),
        (1, True, False),
        (2, True, False),
    ]
    ids = [r["task_id"] for r in body["results"]]
    assert ids[0] == "bulk-a" and ids[2] == "bulk-c" and ids[1]  # the one without an id got a uuid4
    uuid.UUID(ids[1])
    tasks = {t.task_id: t for t in GlobalTask.objects.filter(pk__in=ids)}
    assert tasks["bulk-a"].task_data == {"step": 1} and not tasks["bulk-a"].executed
    assert (tasks[ids[1]].task_status, tasks[ids[1]].task_status_data) == ("completed", {"ok": 1})
    executed = tasks["bulk-c"]  # an executable type runs unless told not to, as on POST /api/v1/tasks/
    assert executed.executed and executed.node == NODE and executed.run_id
    # "Created before" is the items' order (ordering keys, the list's cursor).
    assert tasks["bulk-a"].created_ns < tasks[ids[1]].created_ns < tasks["bulk-c"].created_ns
    source = f"POST {URL} by bulk-service"
    assert history("bulk-a") == [("", "pending", source)]
    assert history(ids[1]) == [("", "completed", source)]
    # The same task read back as POST /api/v1/tasks/ would have made it.
    single = post(service, {"task_id": "single-c", "task_type": "noop", "task_data": {"node": NODE}}, "/api/v1/tasks/")
    assert single.status_code == 201
    assert GlobalTask.objects.filter(pk="single-c").values("task_data", "node", "order_key", "task_status").get() == (
        GlobalTask.objects.filter(pk="bulk-c").values("task_data", "node", "order_key", "task_status").get()
    )


def test_invalid_items_are_answered_and_the_valid_ones_created(service: Client) -> None:
    items: list[Any] = [
        {"task_id": "ok-1", "task_type": PLAIN},
        {"task_id": "bad-type", "task_type": "tab\there"},  # control character
        {"task_id": "bad-field", "task_type": PLAIN, "task_dta": {}},  # a typo is an error, not ignored
        {"task_id": "bad-data", "task_type": PLAIN, "task_data": [1, 2]},
        {"task_id": "bad id", "task_type": PLAIN},
        {"task_id": "bad-payload", "task_type": "noop", "task_data": {"node": "no such node!"}},
        {"task_id": "bad-node", "task_type": "noop", "task_data": {"node": "ghost"}},
        {"task_id": "bad-track", "task_type": PLAIN, "node": NODE},  # a node asks for execution: not executable
        {"task_id": "bad-start", "task_type": "noop", "task_data": {"node": NODE}, "task_status": "completed"},
        {"task_id": "bad-status", "task_type": PLAIN, "task_status": "cancelling"},
        "not an object",
        None,
        {"task_id": "ok-2", "task_type": PLAIN, "execute": False, "task_data": {"n": 2}},
    ]
    resp = post(service, {"tasks": items})
    assert resp.status_code == 200, resp.content
    body = resp.json()
    assert (body["created"], body["existing"], body["failed"]) == (2, 0, 11)
    results = body["results"]
    assert [r["index"] for r in results] == list(range(len(items)))
    by_id = {r["task_id"]: r for r in results if r["task_id"]}
    assert by_id["ok-1"] == {"index": 0, "task_id": "ok-1", "created": True}
    assert by_id["ok-2"]["created"] is True

    def errors(task_id: str) -> dict[str, list[str]]:
        found = by_id[task_id]
        assert found["created"] is False
        return dict(found["errors"])

    assert "no control characters" in errors("bad-type")["task_type"][0]
    assert errors("bad-field") == {"task_dta": ["Unknown or read-only field"]}
    assert "must be a JSON object" in errors("bad-data")["task_data"][0]
    assert "1-64 letters" in errors("bad id")["task_id"][0]  # echoed so the client knows which item it was
    assert errors("bad-payload")["task_data"][0].startswith("task_data.node: ")
    assert "node 'ghost' is not registered" in errors("bad-node")["task_data"][0]
    assert "is not an executable type" in errors("bad-track")["task_type"][0]
    assert "an executed task starts 'pending'" in errors("bad-start")["task_status"][0]
    assert "set by a cancel" in errors("bad-status")["task_status"][0]
    assert results[10]["task_id"] is None and "Expected a dictionary" in results[10]["errors"]["non_field_errors"][0]
    assert results[11]["task_id"] is None and "null" in results[11]["errors"]["non_field_errors"][0]
    # Nothing of the refused items is stored: neither rows nor history.
    assert set(GlobalTask.objects.values_list("task_id", flat=True)) == {"ok-1", "ok-2"}
    assert set(TaskStatusChange.objects.values_list("task_id", flat=True)) == {"ok-1", "ok-2"}


def test_text_no_database_can_store_is_that_items_error(service: Client) -> None:
    """The JSON checks a single create's whole body gets (lone surrogates, NUL, nesting), per item."""
    deep: Any = "x"
    for _ in range(31):  # 31 levels under task_data: as much as a single create takes
        deep = [deep]
    raw = (
        '{"tasks": ['
        '{"task_id": "surrogate", "task_type": "t", "task_data": {"k": "\\ud800"}},'
        '{"task_id": "key", "task_type": "t", "task_data": {"\\udfff": 1}},'
        '{"task_id": "lone-key", "task_type": "t", "\\ud800": 1},'
        f'{{"task_id": "deep-ok", "task_type": "t", "task_data": {{"d": {json.dumps(deep)}}}}},'
        f'{{"task_id": "too-deep", "task_type": "t", "task_data": {{"d": [{json.dumps(deep)}]}}}}'
        "]}"
    )
    single = service.post(
        "/api/v1/tasks/",
        f'{{"task_id": "deep-single", "task_type": "t", "task_data": {{"d": {json.dumps(deep)}}}}}',
        content_type="application/json",
    )
    assert single.status_code == 201, single.content
    resp = service.post(URL, raw, content_type="application/json")
    assert resp.status_code == 200, resp.content
    results = {r["task_id"] or r["index"]: r for r in resp.json()["results"]}
    assert "lone surrogate" in results["surrogate"]["errors"]["task_data"][0]
    assert "lone surrogate" in results["key"]["errors"]["task_data"][0]
    assert "lone surrogate" in json.dumps(results["lone-key"]["errors"])
    assert results["deep-ok"]["created"] is True
    assert "nested deeper than" in results["too-deep"]["errors"]["task_data"][0]
    assert set(GlobalTask.objects.values_list("task_id", flat=True)) == {"deep-single", "deep-ok"}


def test_existing_and_repeated_task_ids(service: Client) -> None:
    task_create(task_id="there-same", task_type=PLAIN, task_data={"a": 1})
    task_create(task_id="there-other", task_type=PLAIN, task_data={"a": 1})
    items = [
        {"task_id": "there-same", "task_type": PLAIN, "task_data": {"a": 1}},  # a retried create
        {"task_id": "there-other", "task_type": PLAIN, "task_data": {"a": 2}},  # another body: a conflict
        {"task_id": "twice", "task_type": PLAIN},
        {"task_id": "twice", "task_type": PLAIN},  # the same id again in the same request
    ]
    resp = post(service, {"tasks": items})
    assert resp.status_code == 200, resp.content
    body = resp.json()
    assert (body["created"], body["existing"], body["failed"]) == (1, 1, 2)
    same, other, first, again = body["results"]
    assert same == {"index": 0, "task_id": "there-same", "created": False}
    assert other["errors"] == {"task_id": ["Task 'there-other' already exists with a different body"]}
    assert first == {"index": 2, "task_id": "twice", "created": True}
    assert again["errors"] == {"task_id": ["task_id 'twice' is also item 2 of this request; each may appear once"]}
    assert GlobalTask.objects.get(pk="there-other").task_data == {"a": 1}
    assert TaskStatusChange.objects.filter(task_id="twice").count() == 1
    # Repeating the whole request after a lost answer is safe: what was created is answered as existing.
    repeat = post(service, {"tasks": [items[0], items[2]]})
    assert repeat.status_code == 200
    assert [r["created"] for r in repeat.json()["results"]] == [False, False]
    assert repeat.json()["existing"] == 2


def test_a_thousand_and_more_in_one_call(settings: Any) -> None:
    """Past SQLite's 999 parameters a statement, and past the 500 ids one existence query reads."""
    settings.TASKHUB_BULK_MAX = 1200
    for i in range(0, 1200, 2):
        task_create(task_id=f"many-{i}", task_type=PLAIN, task_data={"i": i})
    items: list[NewTaskSpec | Refused] = [
        NewTaskSpec(task_type=PLAIN, task_id=f"many-{i}", task_data={"i": i if i % 4 else -1}) for i in range(1200)
    ]
    results = task_create_many(items=items, source="many")
    created = [r.task_id for r in results if r.created]
    existing = [r.task_id for r in results if r.ok and not r.created]
    conflicts = [r.task_id for r in results if not r.ok]
    assert created == [f"many-{i}" for i in range(1, 1200, 2)]
    assert existing == [f"many-{i}" for i in range(2, 1200, 4)]
    assert conflicts == [f"many-{i}" for i in range(0, 1200, 4)]
    assert GlobalTask.objects.count() == 1200
    assert TaskStatusChange.objects.filter(source="many").count() == 600


# --- the request as a whole --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field", "text"),
    [
        ([{"task_type": PLAIN}], "non_field_errors", "must be a JSON object"),
        ({}, "tasks", "required"),
        ({"tasks": {"task_type": PLAIN}}, "tasks", "Expected a list"),
        ({"tasks": []}, "tasks", "at least one task"),
        ({"tasks": [{"task_type": PLAIN}], "atomic": True}, "atomic", "Unknown field"),
        ({"tasks": [{"task_type": PLAIN}] * 4}, "tasks", "at most 3 tasks per request (TASKHUB_BULK_MAX); got 4"),
    ],
)
def test_a_body_that_is_no_list_of_tasks_is_a_400(
    service: Client, settings: Any, body: Any, field: str, text: str
) -> None:
    settings.TASKHUB_BULK_MAX = 3
    resp = post(service, body)
    assert resp.status_code == 400, resp.content
    messages = resp.json()[field]
    assert text in (messages if isinstance(messages, str) else " ".join(messages))
    assert not GlobalTask.objects.exists()


def test_the_service_refuses_more_than_the_limit(settings: Any) -> None:
    settings.TASKHUB_BULK_MAX = 2
    with pytest.raises(Exception, match=r"at most 2 per request \(TASKHUB_BULK_MAX\); got 3"):
        task_create_many(items=[NewTaskSpec(task_type=PLAIN)] * 3)


def test_json_only(service: Client) -> None:
    form = service.post(URL, {"tasks": "x"})  # multipart, as a form would send it
    assert form.status_code == 415
    text = service.post(URL, '{"tasks": [{"task_type": "t"}]}', content_type="text/plain")
    assert text.status_code == 415
    malformed = service.post(URL, '{"tasks": [', content_type="application/json")
    assert malformed.status_code == 400 and "Malformed JSON" in malformed.json()["detail"]
    assert not GlobalTask.objects.exists()


def test_who_may_bulk_create_is_who_may_create(
    service: Client, operator_token: str, nodes: Cluster, django_user_model: Any
) -> None:
    reader = token_client(accounts.token_issue(user=User.objects.create_user("bulk-reader")))
    node = token_client(accounts.token_issue(user=accounts.node_account_ensure(node=Node.objects.get(name=NODE))))
    session = Client()
    session.force_login(django_user_model.objects.create_user("bulk-staff", is_staff=True))
    clients = {
        "anonymous": Client(),
        "reader": reader,
        "node": node,
        "service": service,
        "operator": token_client(operator_token),
        "operator session": session,
    }
    for who, client in clients.items():
        single = post(client, {"task_type": PLAIN}, "/api/v1/tasks/").status_code
        bulk = post(client, {"tasks": [{"task_type": PLAIN}]}).status_code
        assert bulk == single, f"{who}: bulk {bulk}, single {single}"
        assert (bulk in (201,)) == (who in ("service", "operator", "operator session")), who
    assert GlobalTask.objects.filter(task_type=PLAIN).count() == 6  # three accounts, a single and a bulk each


# --- one transaction, and the publish after it ------------------------------------------------------


def test_executed_items_are_published_after_the_commit_in_one_go(
    service: Client, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        resp = post(service, {"tasks": [noop(task_id=f"run-{i}") for i in range(5)] + [{"task_type": PLAIN}]})
        assert queued_runs() == []  # not before the commit
    publishes = [c.func for c in callbacks if isinstance(c, partial) and c.func.__module__.endswith("dispatch")]
    assert publishes == [dispatch.publish_created_many]  # one publish for the five
    assert resp.status_code == 201, resp.content
    tasks = list(GlobalTask.objects.filter(task_type="noop").order_by("created_ns"))
    assert [t.task_id for t in tasks] == [f"run-{i}" for i in range(5)]
    assert queued_runs() == [t.run_id for t in tasks]  # each run once, in creation order
    assert all(t.dispatched_at is not None for t in tasks)
    assert {h.to_status for h in TaskStatusChange.objects.filter(task__in=tasks)} == {"pending"}


def test_a_rolled_back_transaction_keeps_and_publishes_nothing() -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        results = task_create_many(items=[NewTaskSpec(task_type="noop", task_data={"node": NODE}, execute=True)])
        assert results[0].created
        raise RuntimeError("the caller's transaction failed after the bulk create")
    assert not GlobalTask.objects.exists() and not TaskStatusChange.objects.exists()
    assert queued_runs() == []


def test_pull_nodes_and_ordering_keys_as_a_single_create_has_them(django_capture_on_commit_callbacks: Any) -> None:
    items: list[NewTaskSpec | Refused] = [
        NewTaskSpec(task_type="noop", task_id="pulled", task_data={"node": f"{NODE}-pull"}, execute=True),
        *(
            NewTaskSpec(
                task_type="bulk_test_ordered",
                task_id=f"ordered-{i}",
                task_data={"node": NODE, "key": "k"},
                execute=True,
            )
            for i in range(3)
        ),
        Refused({"task_type": ["refused by the caller"]}, "refused"),
    ]
    with django_capture_on_commit_callbacks(execute=True):
        results = task_create_many(items=items, source="test")
    assert [r.created for r in results] == [True, True, True, True, False]
    assert results[4].errors == {"task_type": ["refused by the caller"]}
    ordered = list(GlobalTask.objects.filter(task_type="bulk_test_ordered").order_by("created_ns"))
    assert [t.task_id for t in ordered] == ["ordered-0", "ordered-1", "ordered-2"]
    assert {t.order_key for t in ordered} == {"bulk-test:k"}
    # One task of a key at a time: only the first is sent; a pull node's task waits for its agent.
    assert queued_runs() == [ordered[0].run_id]
    assert GlobalTask.objects.get(pk="pulled").dispatched_at is None
    assert queued_runs(f"{NODE}-pull") == []


def test_creations_in_one_call_of_the_transition_function() -> None:
    """The insert the bulk create and a single create share: the first status judged per kind, a taken
    task_id (in the table, or earlier in the same call) skipped, one history row per row inserted."""
    task_create(task_id="taken", task_type=PLAIN)

    def row(task_id: str, status: str = "pending", node: str = "") -> GlobalTask:
        return GlobalTask(task_id=task_id, task_type=PLAIN, task_status=status, node=node, run_id="r" if node else "")

    news = [
        NewTask(row("n1"), "s"),
        NewTask(row("taken"), "s"),
        NewTask(row("n2", "failed"), "s"),
        NewTask(row("n1"), "s"),
        NewTask(row("x1", "completed", node=NODE), "s"),
        NewTask(row("n3", "cancelling"), "s"),
    ]
    outcomes = task_transition_new_many(news=news)
    assert [(o.task_id, o.verdict) for o in outcomes] == [
        ("n1", Verdict.APPLY),
        ("taken", Verdict.REJECT),
        ("n2", Verdict.APPLY),
        ("n1", Verdict.REJECT),
        ("x1", Verdict.REJECT),
        ("n3", Verdict.REJECT),
    ]
    assert outcomes[1].reason == EXISTS and outcomes[3].reason == EXISTS
    assert "starts 'pending'" in outcomes[4].reason
    assert sorted(TaskStatusChange.objects.values_list("task_id", "to_status", "source")) == [
        ("n1", "pending", "s"),
        ("n2", "failed", "s"),
        ("taken", "pending", ""),
    ]


# --- a real node worker runs them ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_node_worker_runs_what_a_bulk_create_published(
    child_env: dict[str, str], settings: Any, tmp_path: Path
) -> None:
    node = f"bulk{RUN}-live"
    node_register(cluster=cluster_ensure(name=f"bulk{RUN}"), name=node)
    broker = str(celery_app.conf.broker_url)
    env = dict(child_env, REDIS_URL=broker, CELERY_BROKER_URL=broker, TASKHUB_HEARTBEAT_SECONDS="1")
    settings.REDIS_URL = broker  # the stream the node reports to, and the writer reads
    writer = start_manage(["run_writer"], dict(env, DATABASE_URL=database_url()), tmp_path / "writer.log")
    worker = start_node_worker(
        [node, "--data-dir", str(tmp_path / "node"), "--concurrency", "2", "--loglevel", "INFO"],
        {k: v for k, v in env.items() if k != "DATABASE_URL"},
        tmp_path / "node.log",
    )
    try:
        items = [NewTaskSpec(task_type="noop", task_data={"node": node}, execute=True) for _ in range(20)]
        results = task_create_many(items=items, source="test")
        ids = [str(r.task_id) for r in results]
        assert all(r.created for r in results)

        def all_completed() -> bool:
            return GlobalTask.objects.filter(pk__in=ids, task_status="completed").count() == len(ids)

        wait_until(all_completed, 90, "the node worker to complete the bulk-created noop tasks")
        assert TaskStatusChange.objects.filter(task_id__in=ids, to_status="completed").count() == len(ids)
    except AssertionError:
        for log in sorted(tmp_path.glob("*.log")):
            print(f"--- {log.name}\n{log.read_text()[-3000:]}")
        raise
    finally:
        stop(worker)
        stop(writer)
        redis.Redis.from_url(broker).delete(node_queue(node))


# --- the CLI: taskhub task create-many --------------------------------------------------------------


@pytest.fixture
def cli_env(operator_token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("TASKHUB_TOKEN", operator_token)
    monkeypatch.delenv("TASKHUB_URL", raising=False)


def taskhub(server: LiveServer, *args: str, stdin: str | None = None) -> Any:
    return CliRunner().invoke(
        cli_app, [*args, "--url", server.url], input=stdin, env={"COLUMNS": "200"}, catch_exceptions=False
    )


@pytest.mark.django_db(transaction=True)
def test_cli_create_many_from_a_json_array_file(live_server: LiveServer, cli_env: None, tmp_path: Path) -> None:
    tasks = [{"task_id": "cli-1", "task_type": PLAIN, "task_data": {"n": 1}}, {"task_id": "cli-2", "task_type": PLAIN}]
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(tasks))
    result = taskhub(live_server, "task", "create-many", str(path))
    assert result.exit_code == 0, result.output
    assert "cli-1" in result.stdout and "cli-2" in result.stdout and "created" in result.stdout
    assert "2 created" in result.stdout
    assert GlobalTask.objects.get(pk="cli-1").task_data == {"n": 1}
    again = taskhub(live_server, "task", "create-many", str(path), "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["existing"] == 2


@pytest.mark.django_db(transaction=True)
def test_cli_create_many_json_lines_on_stdin_exits_1_if_an_item_failed(live_server: LiveServer, cli_env: None) -> None:
    lines = "\n".join(
        [json.dumps({"task_id": "line-1", "task_type": PLAIN}), "", json.dumps({"task_id": "line-2", "task_type": ""})]
    )
    result = taskhub(live_server, "task", "create-many", "-", stdin=lines + "\n")
    assert result.exit_code == 1, result.output
    assert "line-1" in result.stdout and "created" in result.stdout
    assert "line-2" in result.stdout and "task_type" in result.stdout
    assert "1 created, 1 failed" in result.stdout
    assert list(GlobalTask.objects.values_list("task_id", flat=True)) == ["line-1"]


@pytest.mark.django_db(transaction=True)
def test_cli_create_many_refuses_a_file_that_is_no_list_of_objects(
    live_server: LiveServer, cli_env: None, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"task_type": "x"')
    result = taskhub(live_server, "task", "create-many", str(bad))
    assert result.exit_code == 2 and "line 1" in result.stderr
    missing = taskhub(live_server, "task", "create-many", str(tmp_path / "nope.json"))
    assert missing.exit_code == 2
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    assert taskhub(live_server, "task", "create-many", str(empty)).exit_code == 2
    assert not GlobalTask.objects.exists()
