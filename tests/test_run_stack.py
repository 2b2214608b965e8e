"""`make run`'s stack as a new user gets it: web and writer up, the seed flow works, Ctrl-C stops all."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MANAGE, ROOT
from tests.helpers import free_port, stop, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def call(method: str, url: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", **({"Authorization": f"Token {token}"} if token else {})}
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def processes_with_env(marker: str) -> list[int]:
    """Pids whose environment carries our marker: every process this stack started."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def run_stack_flow(tmp_path: Path, redis_url: str, prefix: str, with_nodes: bool) -> str:
    # Unique per run: pytest reuses tmp_path names across sessions, and a CI run may be going on too.
    token = uuid.uuid4().hex
    marker = f"TASKHUB_STACK_TEST={token}"
    env = dict(os.environ)
    env.update(
        TASKHUB_VAR_DIR=str(tmp_path / "var"),
        DATABASE_URL=f"sqlite:///{tmp_path / 'stack.sqlite3'}",
        REDIS_URL=redis_url,
        TASKHUB_STREAM_PREFIX=prefix,
        TASKHUB_ADMIN_PASSWORD="stack-test-password",
        TASKHUB_STACK_TEST=token,
        PYTHONUNBUFFERED="1",
        XDG_CONFIG_HOME=str(tmp_path / "xdg"),  # where run_stack logs the CLI in
    )
    env.pop("CELERY_BROKER_URL", None)
    env.pop("TASKHUB_TOKEN", None)
    subprocess.run([*MANAGE, "migrate", "--noinput", "-v0"], env=env, cwd=ROOT, check=True)
    port, seed_port = free_port(), free_port()
    log = tmp_path / "stack.log"
    # Node names of this run only: queues are named after nodes, and another run may share Redis.
    nodes = [f"s{token[:6]}-{i}" for i in (1, 2, 3)] if with_nodes else []
    argv = [*MANAGE, "run_stack", "--addr", f"127.0.0.1:{port}", "--seed-port", str(seed_port)]
    stack = subprocess.Popen(
        [*argv, "--demo-nodes", ",".join(nodes)],
        env=env,
        cwd=ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: port_open(port) and call("GET", f"{base}/healthz")[0] == 200, 60, "the stack to be healthy")
        # The banner's ready-to-use line for the CLI and scripts; /api/v1 takes nothing less.
        found = re.search(rf"export TASKHUB_URL={re.escape(base)} TASKHUB_TOKEN=(\w+)", log.read_text())
        assert found, log.read_text()
        api_token = found.group(1)
        assert call("GET", f"{base}/api/v1/tasks/")[0] == 401
        assert call("GET", f"{base}/api/v1/tasks/", token=api_token)[0] == 200
        saved = json.loads((tmp_path / "xdg" / "taskhub" / "config.json").read_text())
        assert saved == {"url": base, "token": api_token}
        code, body = call("POST", f"{base}/task", {"task_type": "example_task_type", "task_data": {"key": "value"}})
        assert code == 200 and body["success"], body
        task_id = body["data"]["task_id"]
        code, body = call("POST", f"{base}/task_update", {"task_id": task_id, "status": "completed"})
        assert code == 200, body
        wait_until(
            lambda: call("GET", f"{base}/task/{task_id}")[1]["data"]["task_status"] == "completed",
            30,
            "the writer to apply the update",
        )
        # The same service on the reference service's port, for clients that still point there.
        wait_until(lambda: port_open(seed_port), 30, "the seed-compatible port")
        assert call("GET", f"http://127.0.0.1:{seed_port}/task/{task_id}")[1]["data"]["task_status"] == "completed"
        if nodes:
            # The demo cluster runs tasks on its nodes: a volume across all three, over plain HTTP.
            wait_until(
                lambda: all(n["online"] for n in call("GET", f"{base}/api/v1/nodes/", token=api_token)[1]),
                60,
                "the demo nodes to come online",
            )
            units = [{"node": n} for n in nodes]
            code, body = call(
                "POST", f"{base}/api/v1/clusters/demo/volumes", {"name": "vol1", "storage_units": units}, api_token
            )
            assert code == 202, body
            wait_until(
                lambda: call("GET", f"{base}/api/v1/tasks/{body['task_id']}/", token=api_token)[1]["task_status"]
                == "completed",
                60,
                "the volume to be created on the demo nodes",
            )
            volumes = call("GET", f"{base}/api/v1/clusters/demo/volumes", token=api_token)[1]
            assert [v["name"] for v in volumes] == ["vol1"]
            for unit in volumes[0]["storage_units"]:
                assert Path(unit["path"]).is_dir()
                assert Path(unit["path"]).is_relative_to(tmp_path / "var" / "nodes" / unit["node"])
            demo_placement(base, api_token, nodes, units)
        output = log.read_text()
        assert f"{base}/admin/" in output and "stack-test-password" in output
        assert f"{base}/api/docs/" in output
    finally:
        if stack.poll() is None:
            os.killpg(stack.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        try:
            stack.wait(timeout=30)
        finally:
            stop(stack, signal.SIGKILL)
    assert stack.returncode == 0, log.read_text()
    assert not port_open(port) and not port_open(seed_port)
    assert processes_with_env(marker) == [], "make run left processes behind"
    return log.read_text()


def demo_placement(base: str, token: str, nodes: list[str], units: list[dict[str, str]]) -> None:
    """Issue 11's demo: five volumes created back to back spread over the three nodes; the demo's ssd node
    (the middle one) is the only one a disk=ssd task may run on; a missing label fails at once."""
    listed = {n["name"]: n for n in call("GET", f"{base}/api/v1/nodes/", token=token)[1]}
    assert [listed[n]["labels"]["disk"] for n in nodes] == ["hdd", "ssd", "hdd"], listed
    assert all(listed[n]["capacity"]["slots"] == 4 for n in nodes), listed
    made = []
    for i in range(5):
        code, task = call(
            "POST", f"{base}/api/v1/clusters/demo/volumes", {"name": f"spread{i}", "storage_units": units}, token
        )
        assert code == 202, task
        made.append(task)
    per_node = Counter(t["node"] for t in made)
    assert set(per_node) == set(nodes) and max(per_node.values()) == 2, per_node
    data: dict[str, Any] = {"cluster": "demo", "name": "fast1", "storage_units": units}
    body: dict[str, Any] = {"task_type": "volume_create", "task_data": data}
    code, fast = call("POST", f"{base}/api/v1/tasks/", {**body, "constraints": {"labels": {"disk": "ssd"}}}, token)
    assert code == 201 and fast["node"] == nodes[1] and fast["task_status"] == "pending", fast
    body = {**body, "task_data": {**data, "name": "fast2"}}
    code, nowhere = call("POST", f"{base}/api/v1/tasks/", {**body, "constraints": {"labels": {"disk": "nvme"}}}, token)
    assert code == 201 and nowhere["task_status"] == "failed", nowhere
    error = nowhere["task_status_data"]["error"]
    assert error["type"] == "Unschedulable" and all(f"{n}: label disk=" in error["message"] for n in nodes), error
    for task in [*made, fast]:

        def completed(task_id: str = task["task_id"]) -> bool:
            return bool(call("GET", f"{base}/api/v1/tasks/{task_id}/", token=token)[1]["task_status"] == "completed")

        wait_until(completed, 60, f"volume task {task['task_id']} to complete on {task['node']}")


def test_stack_with_the_redis_already_running(tmp_path: Path, redis_stream: Any, settings: Any) -> None:
    output = run_stack_flow(tmp_path, settings.REDIS_URL, settings.TASKHUB_STREAM_PREFIX, with_nodes=True)
    assert "starting a private one" not in output


def test_stack_starts_a_private_redis_when_none_listens(tmp_path: Path) -> None:
    # Nothing listens on this port, so run_stack must bring its own Redis and stop it after.
    output = run_stack_flow(tmp_path, f"redis://127.0.0.1:{free_port()}/0", "taskhub-test-private", with_nodes=False)
    assert "starting a private one" in output
