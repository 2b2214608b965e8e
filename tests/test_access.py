"""Access control (README "Access control"): who may do what, on the seed API and /api/v1.

Accounts: anonymous (from a client network in TASKHUB_SEED_ANON_NETWORKS or not), a bad token, an
operator (staff), a service account, a node account, and a plain user. REMOTE_ADDR="10.1.2.3" on the test
client is only a header value: nothing goes over a network.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from django.contrib.auth.models import Group, User
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.test import Client
from rest_framework.authtoken.models import Token

from tasks_app.fleet.services import cluster_ensure, node_register
from tasks_app.models import Cluster, GlobalTask, Node
from tasks_app.ops import accounts
from tasks_app.tasks.services import task_create
from tasks_app.tasks.stream import read_after
from tests.conftest import MANAGE, OPERATOR_PASSWORD, ROOT
from workers.protocol import keys

pytestmark = [pytest.mark.django_db, pytest.mark.redis]

ELSEWHERE = "10.1.2.3"  # not in the default TASKHUB_SEED_ANON_NETWORKS


@pytest.fixture(autouse=True)
def pushed(redis_stream: redis.Redis) -> Callable[[], list[str]]:
    """POST /task_update queues to the real update stream (this test's own key prefix): the task ids
    of every update queued so far, from every shard."""

    def queued() -> list[str]:
        entries = [e for shard in range(keys.shard_count()) for e in read_after(shard, "0-0", 1000)]
        return [e.update.task_id for e in sorted(entries, key=lambda e: e.stream_id) if e.update is not None]

    return queued


@pytest.fixture
def c1() -> Cluster:
    cluster = cluster_ensure(name="c1")
    for name in ("node1", "node2"):
        node_register(cluster=cluster, name=name, transport=Node.Transport.PULL)
    return cluster


@pytest.fixture
def tasks(c1: Cluster) -> dict[str, str]:
    """One executed task on each node, and one tracked task (on none)."""
    ids = {}
    for name in ("node1", "node2"):
        task, _ = task_create(task_type="noop", task_data={"node": name}, execute=True)
        ids[name] = task.task_id
    ids["none"] = task_create(task_type="example_task_type")[0].task_id
    return ids


def token_client(key: str, addr: str = ELSEWHERE) -> Client:
    return Client(REMOTE_ADDR=addr, HTTP_AUTHORIZATION=f"Token {key}")


@pytest.fixture
def operator_client(operator_token: str) -> Client:
    return token_client(operator_token)


@pytest.fixture
def service_client() -> Client:
    return token_client(accounts.token_issue(user=accounts.service_account_ensure(name="billing")))


@pytest.fixture
def node1_client(c1: Cluster) -> Client:
    node = Node.objects.get(name="node1")
    return token_client(accounts.token_issue(user=accounts.node_account_ensure(node=node)))


@pytest.fixture
def reader_client() -> Client:
    user = User.objects.create_user("reader", password="reader-pw-for-tests")
    return token_client(accounts.token_issue(user=user))


def post(client: Client, path: str, body: Any) -> Any:
    return client.post(path, json.dumps(body), content_type="application/json")


def put(client: Client, path: str, body: Any) -> Any:
    return client.put(path, json.dumps(body), content_type="application/json")


def patch(client: Client, path: str, body: Any) -> Any:
    return client.patch(path, json.dumps(body), content_type="application/json")


def seed_calls(client: Client, task_id: str) -> dict[str, int]:
    """Every seed endpoint once; the status code of each. An update of an executed task names its run,
    as its node's report would."""
    run_id = GlobalTask.objects.get(pk=task_id).run_id
    update = {"task_id": task_id, "status": "received", **({"run_id": run_id} if run_id else {})}
    return {
        "POST /task": post(client, "/task", {"task_type": "t"}).status_code,
        "GET /task": client.get(f"/task/{task_id}").status_code,
        "GET /tasks": client.get("/tasks").status_code,
        "PUT /task": put(client, f"/task/{task_id}", {"task_status_data": {"a": 1}}).status_code,
        "POST /task_update": post(client, "/task_update", update).status_code,
        "DELETE /task": client.delete(f"/task/{task_id}").status_code,
    }


ALL_OK = dict.fromkeys(["POST /task", "GET /task", "GET /tasks", "PUT /task", "POST /task_update", "DELETE /task"], 200)


# --- anonymous -----------------------------------------------------------------------------------


def test_anonymous_loopback_keeps_the_whole_seed_api(tasks: dict[str, str], pushed: Callable[[], list[str]]) -> None:
    assert seed_calls(Client(), tasks["none"]) == ALL_OK
    assert pushed() == [tasks["none"]]
    # Past access control on an executed task too; its status is its node's to report, not anyone's to write.
    executed = {**ALL_OK, "PUT /task": 409, "POST /task_update": 409}
    assert seed_calls(Client(REMOTE_ADDR="::1"), tasks["node1"]) == executed
    assert Client(REMOTE_ADDR="::ffff:127.0.0.1").get("/tasks").status_code == 200  # IPv4 on a dual-stack socket


def test_anonymous_from_elsewhere_is_401_in_the_seed_envelope(
    tasks: dict[str, str], pushed: Callable[[], list[str]]
) -> None:
    client = Client(REMOTE_ADDR=ELSEWHERE)
    assert set(seed_calls(client, tasks["none"]).values()) == {401}
    resp = client.get(f"/task/{tasks['none']}")
    body = resp.json()
    assert body["success"] is False and "Authorization: Token" in body["message"]
    assert resp["WWW-Authenticate"].startswith("Token")
    assert GlobalTask.objects.count() == 3 and pushed() == []


def test_the_networks_setting_decides(settings: Any, tasks: dict[str, str]) -> None:
    settings.TASKHUB_SEED_ANON_NETWORKS = []  # switched off: loopback too
    assert set(seed_calls(Client(), tasks["none"]).values()) == {401}
    settings.TASKHUB_SEED_ANON_NETWORKS = ["10.0.0.0/8"]
    assert Client(REMOTE_ADDR=ELSEWHERE).get("/tasks").status_code == 200
    assert Client().get("/tasks").status_code == 401


def test_forwarded_requests_and_trusted_proxies(settings: Any) -> None:
    # Through a proxy nobody told us about, REMOTE_ADDR is the proxy's: not a reason to trust the client.
    assert Client(HTTP_X_FORWARDED_FOR="127.0.0.1").get("/tasks").status_code == 401
    # One trusted proxy on this host (nginx in front of gunicorn): the address it appended counts.
    settings.TASKHUB_TRUSTED_PROXY_COUNT = 1
    settings.TASKHUB_SEED_ANON_NETWORKS = ["192.168.7.0/24"]
    via_proxy = "127.0.0.1"
    assert Client(REMOTE_ADDR=via_proxy, HTTP_X_FORWARDED_FOR="192.168.7.9").get("/tasks").status_code == 200
    assert Client(REMOTE_ADDR=via_proxy, HTTP_X_FORWARDED_FOR=ELSEWHERE).get("/tasks").status_code == 401
    # The client's own claim (left of what the proxy appended) does not count.
    spoofed = Client(REMOTE_ADDR=via_proxy, HTTP_X_FORWARDED_FOR=f"192.168.7.9, {ELSEWHERE}")
    assert spoofed.get("/tasks").status_code == 401
    assert Client(REMOTE_ADDR="192.168.7.9").get("/tasks").status_code == 401  # not through the proxy: unknown


def test_anonymous_api_v1_is_401_but_docs_and_health_are_public(tasks: dict[str, str]) -> None:
    client = Client()  # loopback: that opens the seed API only
    for path in [
        "/api/v1/",
        "/api/v1/tasks/",
        f"/api/v1/tasks/{tasks['node1']}/",
        "/api/v1/clusters/",
        "/api/v1/nodes/",
        "/api/v1/clusters/c1/volumes",
        "/api/v1/tasks/c1/node1",
    ]:
        resp = client.get(path)
        assert resp.status_code == 401, path
        assert resp["WWW-Authenticate"].startswith("Token")
    assert post(client, "/api/v1/tasks/", {"task_type": "t"}).status_code == 401
    assert client.get("/api/schema/").status_code == 200
    assert client.get("/api/docs/").status_code == 200
    # Public, and this module has a database and a Redis (redis_stream): healthy, so 200 and no less.
    health = client.get("/healthz")
    assert health.status_code == 200, health.content
    assert health.json()["status"] == "ok"


def test_a_bad_token_is_401_even_from_loopback(tasks: dict[str, str]) -> None:
    bad = token_client("not-a-token", addr="127.0.0.1")
    resp = bad.get(f"/task/{tasks['none']}")
    assert resp.status_code == 401 and resp.json() == {"success": False, "message": "Invalid token."}
    assert bad.get("/api/v1/tasks/").status_code == 401
    user = User.objects.create_user("gone")
    key = accounts.token_issue(user=user)
    User.objects.filter(pk=user.pk).update(is_active=False)
    assert token_client(key).get("/tasks").status_code == 401


# --- operator ------------------------------------------------------------------------------------


def test_operator_may_do_everything(operator_client: Client, tasks: dict[str, str]) -> None:
    assert seed_calls(operator_client, tasks["none"]) == ALL_OK
    created = post(operator_client, "/task", {"task_type": "t"}).json()["data"]["task_id"]
    assert GlobalTask.objects.get(pk=created).history.get().source.endswith(" by operator")
    resp = post(operator_client, "/api/v1/tasks/", {"task_type": "t"})
    assert resp.status_code == 201
    detail = f"/api/v1/tasks/{resp.json()['task_id']}/"
    assert patch(operator_client, detail, {"task_data": {"x": 1}}).status_code == 200
    assert operator_client.delete(detail).status_code == 204
    assert post(operator_client, "/api/v1/clusters/", {"name": "c2"}).status_code == 201
    assert post(operator_client, "/api/v1/nodes/", {"name": "n9", "cluster": "c2"}).status_code == 201
    assert operator_client.get("/api/v1/tasks/c1/node1").status_code == 200  # e.g. to debug a node


def test_a_node_names_its_cluster_with_a_string(operator_client: Client) -> None:
    """The schema says a string: 0 must not find a cluster named "0" (found by schemathesis)."""
    assert post(operator_client, "/api/v1/clusters/", {"name": "0"}).status_code == 201
    resp = post(operator_client, "/api/v1/nodes/", {"name": "n0", "cluster": 0})
    assert resp.status_code == 400
    assert resp.json() == {"cluster": ["Must be a name, as a JSON string."]}
    assert not Node.objects.filter(name="n0").exists()
    assert post(operator_client, "/api/v1/nodes/", {"name": "n0", "cluster": "0"}).status_code == 201
    assert Node.objects.get(name="n0").cluster.name == "0"


# --- service account -----------------------------------------------------------------------------


def test_service_account_does_to_tasks_on_v1_what_it_does_on_the_seed_api(
    service_client: Client, tasks: dict[str, str]
) -> None:
    # One permission model (README "Access control"): tasks, on both surfaces; the rest it reads.
    assert seed_calls(service_client, tasks["none"]) == ALL_OK
    resp = post(service_client, "/api/v1/tasks/", {"task_type": "t"})
    assert resp.status_code == 201
    detail = f"/api/v1/tasks/{resp.json()['task_id']}/"
    assert service_client.get(detail).status_code == 200
    assert service_client.get(f"{detail}history/").status_code == 200
    assert service_client.get("/api/v1/tasks/").status_code == 200
    assert service_client.get("/api/v1/clusters/").status_code == 200  # reads, like any account
    changed = patch(service_client, detail, {"task_data": {"b": 2}})
    assert changed.status_code == 200 and changed.json()["task_data"] == {"b": 2}
    assert GlobalTask.objects.get(pk=resp.json()["task_id"]).task_data == {"b": 2}
    cancelled = post(service_client, f"{detail}cancel/", {})
    assert cancelled.status_code == 200 and cancelled.json()["task_status"] == "cancelled"
    assert service_client.delete(detail).status_code == 204
    assert not GlobalTask.objects.filter(pk=resp.json()["task_id"]).exists()
    assert post(service_client, "/api/v1/clusters/c1/volumes", {"name": "v", "storage_units": []}).status_code == 403
    assert post(service_client, "/api/v1/nodes/", {"name": "n9", "cluster": "c1"}).status_code == 403
    assert service_client.get("/api/v1/tasks/c1/node1").status_code == 403  # pulling is the node's
    assert GlobalTask.objects.get(pk=tasks["node1"]).task_status == "pending"


# --- node account --------------------------------------------------------------------------------


def test_node_reads_and_reports_on_its_own_tasks_only(
    node1_client: Client, tasks: dict[str, str], pushed: Callable[[], list[str]]
) -> None:
    own, other = tasks["node1"], tasks["node2"]
    assert node1_client.get(f"/task/{own}").status_code == 200
    assert node1_client.get(f"/api/v1/tasks/{own}/").json()["task_id"] == own
    run_id = GlobalTask.objects.get(pk=own).run_id
    report = {"task_id": own, "status": "in_progress", "run_id": run_id}
    assert post(node1_client, "/task_update", report).status_code == 200
    assert pushed() == [own]
    # A node's report names the run it is about: one from before a retry must not land on the new run.
    unnamed = post(node1_client, "/task_update", {"task_id": own, "status": "completed"})
    assert unnamed.status_code == 400 and "'run_id' is required" in unnamed.json()["message"]
    assert pushed() == [own]
    # Another node's task answers exactly like one that does not exist.
    for task_id in (other, tasks["none"], "no-such-task"):
        missing = node1_client.get(f"/task/{task_id}")
        assert missing.status_code == 404
        assert missing.json() == {"success": False, "message": f"Task {task_id!r} not found"}
        update = post(node1_client, "/task_update", {"task_id": task_id, "status": "completed"})
        assert update.status_code == 404 and update.json()["message"] == f"Task {task_id!r} not found"
        v1 = node1_client.get(f"/api/v1/tasks/{task_id}/")
        assert v1.status_code == 404 and v1.json() == {"detail": f"Task {task_id!r} not found"}
    assert pushed() == [own]


def test_node_may_do_nothing_else(node1_client: Client, tasks: dict[str, str]) -> None:
    own = tasks["node1"]
    calls = seed_calls(node1_client, own)
    assert calls == {**dict.fromkeys(ALL_OK, 403), "GET /task": 200, "POST /task_update": 200}
    assert GlobalTask.objects.filter(pk=own).exists()
    for path in ["/api/v1/tasks/", f"/api/v1/tasks/{own}/history/", "/api/v1/clusters/", "/api/v1/nodes/", "/api/v1/"]:
        assert node1_client.get(path).status_code == 403, path
    assert post(node1_client, "/api/v1/tasks/", {"task_type": "t"}).status_code == 403
    assert patch(node1_client, f"/api/v1/tasks/{own}/", {"task_status": "completed"}).status_code == 403
    assert node1_client.delete(f"/api/v1/tasks/{own}/").status_code == 403
    assert post(node1_client, "/api/v1/clusters/c1/volumes", {"name": "v", "storage_units": []}).status_code == 403


def test_node_pulls_its_own_node_only(node1_client: Client, tasks: dict[str, str], c1: Cluster) -> None:
    resp = node1_client.get("/api/v1/tasks/c1/node1")
    assert resp.status_code == 200 and [t["task_id"] for t in resp.json()] == [tasks["node1"]]
    node1 = Node.objects.get(name="node1")
    assert node1_client.get(f"/api/v1/tasks/{c1.pk}/{node1.pk}").status_code == 200  # ids work too
    denied = node1_client.get("/api/v1/tasks/c1/node2")
    assert denied.status_code == 403
    assert GlobalTask.objects.get(pk=tasks["node2"]).task_status == "pending"  # not marked received
    assert node1_client.get("/api/v1/tasks/other/node1").status_code == 403


def test_a_node_account_stays_a_node_account_even_if_made_staff(node1_client: Client, tasks: dict[str, str]) -> None:
    User.objects.filter(username="node:node1").update(is_staff=True)
    assert node1_client.get("/api/v1/tasks/").status_code == 403
    assert node1_client.get(f"/task/{tasks['node2']}").status_code == 404


# --- plain user ----------------------------------------------------------------------------------


def test_a_plain_user_reads_only(reader_client: Client, tasks: dict[str, str], pushed: Callable[[], list[str]]) -> None:
    own = tasks["none"]
    calls = seed_calls(reader_client, own)
    assert calls == {**dict.fromkeys(ALL_OK, 403), "GET /task": 200, "GET /tasks": 200}
    assert pushed() == []
    for path in ["/api/v1/tasks/", f"/api/v1/tasks/{own}/", f"/api/v1/tasks/{own}/history/", "/api/v1/clusters/"]:
        assert reader_client.get(path).status_code == 200, path
    assert post(reader_client, "/api/v1/tasks/", {"task_type": "t"}).status_code == 403
    assert patch(reader_client, f"/api/v1/tasks/{own}/", {"task_data": {}}).status_code == 403
    assert post(reader_client, "/api/v1/clusters/", {"name": "c9"}).status_code == 403
    assert reader_client.get("/api/v1/tasks/c1/node1").status_code == 403


def test_a_browser_session_reads_the_seed_api_but_never_writes_with_it(tasks: dict[str, str]) -> None:
    client = Client(REMOTE_ADDR=ELSEWHERE)
    client.force_login(User.objects.create_user("op2", is_staff=True))
    assert client.get(f"/task/{tasks['none']}").status_code == 200
    assert client.get("/api/v1/tasks/").status_code == 200
    # The seed views take no CSRF token, so a session alone never authorises a write there.
    refused = post(client, "/task", {"task_type": "t"})
    assert refused.status_code == 401 and "browser session counts only for GET" in refused.json()["message"]


# --- tokens: the login endpoint and the commands ---------------------------------------------------


def test_login_endpoint_trades_a_password_for_the_token(operator: User, operator_token: str, settings: Any) -> None:
    cache.clear()
    client = Client()
    url = "/api/v1/auth/token/"
    resp = post(client, url, {"username": "operator", "password": OPERATOR_PASSWORD})
    assert resp.status_code == 200 and resp.json() == {"token": operator_token}
    stale = Client(HTTP_AUTHORIZATION="Token stale")  # does not stand in the way of logging in again
    assert post(stale, url, {"username": "operator", "password": OPERATOR_PASSWORD}).status_code == 200
    wrong = post(client, url, {"username": "operator", "password": "nope"})
    assert wrong.status_code == 400 and "Unable to log in" in str(wrong.json())
    settings.TASKHUB_LOGIN_RATE = "3/min"  # three attempts so far from this address
    assert post(client, url, {"username": "operator", "password": OPERATOR_PASSWORD}).status_code == 429
    cache.clear()


def test_drf_create_token_prints_a_token_for_an_existing_user(
    operator: User, capsys: pytest.CaptureFixture[str]
) -> None:
    call_command("drf_create_token", "operator")
    key = Token.objects.get(user=operator).key
    assert f"Generated token {key} for user operator" in capsys.readouterr().out
    with pytest.raises(CommandError):
        call_command("drf_create_token", "nobody")


def test_create_service_token(capsys: pytest.CaptureFixture[str], operator: User) -> None:
    call_command("create_service_token", "billing")
    key = capsys.readouterr().out.strip()
    user = User.objects.get(username="billing")
    assert Token.objects.get(user=user).key == key
    assert Group.objects.get(name="services").user_set.filter(pk=user.pk).exists()
    assert not user.has_usable_password() and not user.is_staff
    call_command("create_service_token", "billing")
    assert capsys.readouterr().out.strip() == key  # the same token again
    call_command("create_service_token", "billing", "--rotate")
    rotated = capsys.readouterr().out.strip()
    assert rotated != key and token_client(key).get("/tasks").status_code == 401
    assert post(token_client(rotated), "/task", {"task_type": "t"}).status_code == 200
    call_command("create_service_token", "billing", "--revoke")
    assert capsys.readouterr().out == "" and not Token.objects.filter(user=user).exists()
    with pytest.raises(CommandError, match="operator"):
        call_command("create_service_token", "operator")


def test_create_node_token(capsys: pytest.CaptureFixture[str], c1: Cluster, tasks: dict[str, str]) -> None:
    call_command("create_node_token", "node1")
    key = capsys.readouterr().out.strip()
    node = Node.objects.get(name="node1")
    assert node.user is not None and node.user.username == "node:node1"
    assert Token.objects.get(user=node.user).key == key
    assert token_client(key).get("/api/v1/tasks/c1/node1").status_code == 200
    call_command("create_node_token", "node1")
    assert capsys.readouterr().out.strip() == key
    with pytest.raises(CommandError, match="no node named 'ghost'"):
        call_command("create_node_token", "ghost")


# --- production settings ---------------------------------------------------------------------------


def _production_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("SECRET_KEY", "DEBUG", "TASKHUB_BEHIND_PROXY", "SECURE_HSTS_SECONDS"):
        env.pop(name, None)
    env.update(TASKHUB_HTTPS="true", DEBUG="false", ALLOWED_HOSTS="example.com", TASKHUB_VAR_DIR=str(tmp_path))
    env.update(extra)
    return env


def test_production_settings_pass_the_deploy_check(tmp_path: Path) -> None:
    key = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789!@#%^&*(-_=+)") for _ in range(50))
    proc = subprocess.run(
        [*MANAGE, "check", "--deploy", "--fail-level", "WARNING"],
        env=_production_env(tmp_path, SECRET_KEY=key),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "WARNING" not in output and "System check identified no issues" in output


def test_production_refuses_the_dev_secret_key(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*MANAGE, "check"], env=_production_env(tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0
    assert "ImproperlyConfigured" in proc.stderr and "SECRET_KEY" in proc.stderr
