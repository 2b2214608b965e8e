"""`taskhub node ...` fleet operations and `taskhub task create/show`'s placement parts (issue 11), against the
real API over real HTTP (pytest-django's live_server), asserting on the output and on what is stored."""

from __future__ import annotations

import json
import logging
import re
import threading
from typing import Any

import pytest
from django.db import connection
from pytest_django.live_server_helper import LiveServer

from cli.render import duration
from tasks_app.fleet.scheduling import node_cordon
from tasks_app.fleet.services import node_register, node_update
from tasks_app.models import Cluster, GlobalTask, Node, StorageUnit, Volume
from tasks_app.tasks.services import task_create
from tests import test_cli
from tests.helpers import node_report, wait_until
from tests.test_cli import as_json, taskhub

pytestmark = pytest.mark.django_db(transaction=True)

# tests/test_cli.py's fixtures: every command runs as the operator; the cluster c1 of pull nodes node1, node2.
cli_auth = test_cli.cli_auth
cluster = test_cli.cluster


def node(name: str) -> Node:
    return Node.objects.get(name=name)


def volume_data(name: str, nodes: list[str]) -> dict[str, Any]:
    return {"cluster": "c1", "name": name, "type": "replicate", "storage_units": [{"node": n} for n in nodes]}


def volume_task(task_id: str, nodes: list[str], node_name: str | None = None, **kw: Any) -> GlobalTask:
    """A volume_create (reassignable: a drain may move it to another of its nodes)."""
    data = volume_data(task_id, nodes)
    return task_create(task_id=task_id, task_type="volume_create", execute=True, task_data=data, node=node_name, **kw)[
        0
    ]


def rows_of(out: str, first: str) -> dict[str, list[str]]:
    """Table rows by their first word, for the rows whose first word starts with `first`."""
    return {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(first)}


def section(out: str, title: str) -> list[str]:
    """The lines of one titled table: after its title and header, up to the blank line that ends it."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == title) + 2
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return lines[start:end]


# --- node list, show -------------------------------------------------------------------------------------


def test_node_list_and_show_scheduling_labels_capacity_and_load(live_server: LiveServer, cluster: Cluster) -> None:
    node_update(node=node("node1"), labels={"disk": "ssd", "zone": "a"}, capacity={"slots": 4})
    Node.objects.filter(name="node1").update(capacity_blocks=100)  # what its worker reports
    volume_task("v-load", ["node1", "node2"], "node1", constraints={"capacity": {"slots": 1}})
    node_cordon(node=node("node2"))
    node_register(cluster=cluster, name="node3", transport=Node.Transport.PULL)
    assert taskhub(live_server, "node", "drain", "node3", "--no-wait").exit_code == 0  # nothing on it

    listed = taskhub(live_server, "node", "list")
    assert listed.exit_code == 0, listed.output
    rows = rows_of(listed.stdout, "node")
    # NAME CLUSTER STATE TRANSPORT ONLINE SCHEDULING LABELS RESERVED/CAPACITY UNFINISHED LAST HEARTBEAT
    assert rows["node1"][:7] == ["node1", "c1", "member", "pull", "no", "schedulable", "disk=ssd,zone=a"]
    assert " ".join(rows["node1"][7:11]) == "blocks 0/100, slots 1/4" and rows["node1"][11] == "1"
    assert rows["node2"][5:8] == ["cordoned", "-", "-"] and rows["node2"][8] == "0"
    assert rows["node3"][5] == "drained"
    assert "3 nodes, 0 online" in listed.stdout

    shown = taskhub(live_server, "node", "show", "node1")
    assert shown.exit_code == 0, shown.output
    out = shown.stdout
    fields = {line.split("  ")[0]: line.split("  ", 1)[1].strip() for line in out.splitlines() if "  " in line}
    assert fields["Scheduling"] == "schedulable" and fields["Labels"] == "disk=ssd,zone=a"
    assert fields["Unfinished tasks"] == "1" and fields["Cluster"] == "c1"
    assert [line.split() for line in section(out, "Capacity")] == [
        ["blocks", "100", "0", "100"],
        ["slots", "4", "1", "3"],
    ]
    assert "v-load" in section(out, "Unfinished tasks")[0] and "1 unfinished task" in out

    assert "drained" in taskhub(live_server, "node", "show", "node3").stdout
    as_api = as_json(taskhub(live_server, "node", "show", "node1", "--json"))
    assert as_api["reserved"] == {"slots": 1} and as_api["unfinished_tasks"] == 1

    missing = taskhub(live_server, "node", "show", "ghost")
    assert missing.exit_code == 1 and "HTTP 404" in missing.stderr


# --- create, update, delete ------------------------------------------------------------------------------


def test_node_create_stores_labels_capacity_state_and_transport(live_server: LiveServer, cluster: Cluster) -> None:
    made = taskhub(
        live_server, "node", "create", "node9", "--cluster", "c1", "--label", "disk=ssd", "-l", "zone=b",
        "--capacity", "slots=4", "--joining", "--pull",
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    assert "Created node node9 in cluster c1 (joining, pull)" in made.stdout
    assert "labels: disk=ssd,zone=b" in made.stdout and "reserved/capacity: slots 0/4" in made.stdout
    stored = node("node9")
    assert (stored.labels, stored.capacity, stored.state, stored.transport, stored.cluster.name) == (
        {"disk": "ssd", "zone": "b"}, {"slots": 4}, "joining", "pull", "c1",
    )  # fmt: skip

    plain = as_json(taskhub(live_server, "node", "create", "node8", "-c", "c1", "--json"))
    assert (plain["state"], plain["transport"], plain["labels"]) == ("member", "queue", {})

    again = taskhub(live_server, "node", "create", "node9", "-c", "c1")
    assert again.exit_code == 1 and "already exists" in again.stderr
    bad = taskhub(live_server, "node", "create", "node7", "-c", "c1", "--label", "disk")
    assert bad.exit_code == 2 and "--label" in bad.stderr and "KEY=VALUE" in bad.stderr
    bad_amount = taskhub(live_server, "node", "create", "node7", "-c", "c1", "--capacity", "slots=many")
    assert bad_amount.exit_code == 2 and "whole number" in bad_amount.stderr
    refused = taskhub(live_server, "node", "create", "node7", "-c", "c1", "--label", "bad key=x")
    assert refused.exit_code == 1 and "labels" in refused.stderr and "HTTP 400" in refused.stderr
    assert not Node.objects.filter(name="node7").exists()


def test_node_update_merges_labels_and_capacity(live_server: LiveServer, cluster: Cluster) -> None:
    node_update(node=node("node1"), labels={"zone": "a", "rack": "r1"}, capacity={"slots": 4, "gpu": 1})
    Node.objects.filter(name="node1").update(capacity_blocks=100)  # reported by its worker, not declared

    result = taskhub(
        live_server, "node", "update", "node1", "--label", "disk=ssd", "--label", "zone-", "--capacity", "slots=8",
        "--capacity", "gpu-",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Updated node node1" in result.stdout and "labels: disk=ssd,rack=r1" in result.stdout
    stored = node("node1")
    assert stored.labels == {"disk": "ssd", "rack": "r1"}
    # The worker's blocks figure is not pinned into the declared capacity.
    assert stored.capacity == {"slots": 8}
    assert "blocks 0/100, slots 0/8" in result.stdout

    # Only labels given: the capacity is not sent, so not touched.
    Node.objects.filter(name="node1").update(capacity={"slots": 8, "blocks": 50})  # declared blocks
    assert taskhub(live_server, "node", "update", "node1", "-l", "rack=r2").exit_code == 0
    stored = node("node1")
    assert stored.labels == {"disk": "ssd", "rack": "r2"} and stored.capacity == {"slots": 8, "blocks": 50}
    assert taskhub(live_server, "node", "update", "node1", "--capacity", "blocks-").exit_code == 0
    assert node("node1").capacity == {"slots": 8}

    nothing = taskhub(live_server, "node", "update", "node1")
    assert nothing.exit_code == 2 and "nothing to change" in nothing.stderr
    both = taskhub(live_server, "node", "update", "node1", "-l", "disk=hdd", "-l", "disk-")
    assert both.exit_code == 2 and "both set and removed" in both.stderr
    negative = taskhub(live_server, "node", "update", "node1", "--capacity", "slots=-1")
    assert negative.exit_code == 1 and "capacity.slots" in negative.stderr
    assert node("node1").labels == {"disk": "ssd", "rack": "r2"} and node("node1").capacity == {"slots": 8}


def test_node_delete_is_refused_with_the_tasks_listed(live_server: LiveServer, cluster: Cluster) -> None:
    volume_task("v-busy", ["node1", "node2"], "node1")
    refused = taskhub(live_server, "node", "delete", "node1")
    assert refused.exit_code == 1
    assert "cannot be removed" in refused.stderr and "HTTP 409" in refused.stderr
    listed = refused.stderr[refused.stderr.index("Unfinished tasks:") :].splitlines()
    assert listed[1].strip() == "task v-busy (volume_create, pending)"
    assert Node.objects.filter(name="node1").exists()
    # A record that names it stands in the way too: listed under Holds.
    vol = Volume.objects.create(name="kept", cluster=cluster, type="distribute", state="created")
    unit = StorageUnit.objects.create(volume=vol, node=node("node2"), path="/data/kept/0", index=0)
    held = taskhub(live_server, "node", "delete", "node2")
    assert held.exit_code == 1
    holds = held.stderr[held.stderr.index("Holds:") :].splitlines()
    assert holds[1].strip() == "storage units of volume(s) kept; delete those volumes first"
    assert "Unfinished tasks:" not in held.stderr and Node.objects.filter(name="node2").exists()
    unit.delete()

    deleted = taskhub(live_server, "node", "delete", "node2")
    assert deleted.exit_code == 0, deleted.output
    assert "Deleted node node2" in deleted.stdout and not Node.objects.filter(name="node2").exists()
    gone = taskhub(live_server, "node", "delete", "node2")
    assert gone.exit_code == 1 and "HTTP 404" in gone.stderr


# --- cordon, uncordon, drain -----------------------------------------------------------------------------


def test_cordon_and_uncordon(live_server: LiveServer, cluster: Cluster) -> None:
    cordoned = taskhub(live_server, "node", "cordon", "node1")
    assert cordoned.exit_code == 0, cordoned.output
    assert "Node node1 is cordoned" in cordoned.stdout and node("node1").scheduling == "cordoned"
    assert node("node2").scheduling == "schedulable"
    # Placement now passes it over.
    placed = volume_task("v-after-cordon", ["node1", "node2"])
    assert placed.node == "node2"

    back = as_json(taskhub(live_server, "node", "uncordon", "node1", "--json"))
    assert back["scheduling"] == "schedulable" and node("node1").scheduling == "schedulable"


def test_drain_moves_pending_tasks_and_lists_what_stays_and_runs(live_server: LiveServer, cluster: Cluster) -> None:
    node_update(node=node("node1"), labels={"disk": "ssd"})
    movable = volume_task("v-move", ["node1", "node2"], "node1")
    volume_task("v-stay", ["node1", "node2"], "node1", constraints={"labels": {"disk": "ssd"}})
    volume_task("v-run", ["node1", "node2"], "node1")
    node_report("v-run", "in_progress")

    result = taskhub(live_server, "node", "drain", "node1", "--no-wait")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Node node1 is draining" in out
    assert "Moved: 1\n  v-move -> node2\n" in out
    assert "Stayed: 1\n  v-stay: unschedulable" in out and "node2: no label disk" in out
    assert "Running: 1 (they finish on node1)\n  v-run\n" in out
    assert node("node1").scheduling == "draining"
    moved = GlobalTask.objects.get(pk="v-move")
    assert (moved.node, moved.task_status) == ("node2", "pending") and moved.run_id != movable.run_id
    assert GlobalTask.objects.get(pk="v-stay").node == "node1"

    # Two unfinished tasks are left on it: waiting runs into the timeout.
    timed_out = taskhub(live_server, "node", "drain", "node1", "--timeout", "0.5")
    assert timed_out.exit_code == 2
    assert "node node1 is not drained after 0.5s: 2 unfinished task(s) remain" in timed_out.stderr

    # They end while the command waits: it sees the node drained.
    node_report("v-stay", "failed", {"error": {"type": "X", "message": "gave up"}})
    polls: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: polls.append(record.getMessage())  # type: ignore[method-assign]
    httpx_log = logging.getLogger("httpx")
    level = httpx_log.level

    def finish() -> None:
        try:
            # Once the command polls the node (its drain answered first), the last task ends.
            wait_until(lambda: any("GET" in p and "/api/v1/nodes/node1/" in p for p in polls), 20, "a poll")
            node_report("v-run", "failed", {"error": {"type": "X", "message": "stopped"}})
        finally:
            connection.close()

    httpx_log.addHandler(handler)
    httpx_log.setLevel(logging.INFO)
    thread = threading.Thread(target=finish, daemon=True)
    thread.start()
    try:
        waited = taskhub(live_server, "node", "drain", "node1", "--timeout", "30")
        thread.join(timeout=30)
    finally:
        httpx_log.removeHandler(handler)
        httpx_log.setLevel(level)
    assert waited.exit_code == 0, waited.output
    assert "Running: 1 (they finish on node1)\n  v-run\n" in waited.stdout  # it was still running when asked
    assert waited.stdout.rstrip().endswith("Node node1 is drained")
    assert sum("/api/v1/nodes/node1/ " in p for p in polls) >= 2  # polled until drained
    assert "drained" in taskhub(live_server, "node", "list").stdout


def test_drain_json_of_an_idle_node(live_server: LiveServer, cluster: Cluster) -> None:
    answer = as_json(taskhub(live_server, "node", "drain", "node2", "--json"))
    assert answer == {"node": "node2", "moved": [], "stayed": [], "running": [], "drained": True, "unfinished_tasks": 0}
    assert node("node2").scheduling == "draining"


# --- task create --label/--need, task show ---------------------------------------------------------------


def test_task_create_sends_labels_and_needs_and_refuses_bad_syntax(live_server: LiveServer, cluster: Cluster) -> None:
    data = json.dumps(volume_data("v-c", ["node1", "node2"]))
    bad = taskhub(live_server, "task", "create", "volume_create", "-d", data, "--label", "disk")
    assert bad.exit_code == 2 and "--label" in bad.stderr and "KEY=VALUE" in bad.stderr
    empty = taskhub(live_server, "task", "create", "volume_create", "-d", data, "--label", "=ssd")
    assert empty.exit_code == 2 and "the name before '=' is empty" in empty.stderr
    bad_need = taskhub(live_server, "task", "create", "volume_create", "-d", data, "--need", "slots=lots")
    assert bad_need.exit_code == 2 and "--need" in bad_need.stderr and "whole number" in bad_need.stderr
    twice = taskhub(
        live_server, "task", "create", "volume_create", "-d", data, "--need", "slots=1", "--need", "slots=2"
    )
    assert twice.exit_code == 2 and "given twice" in twice.stderr
    # The server judges what the syntax lets through: the constraints reach it.
    zero = taskhub(live_server, "task", "create", "volume_create", "-d", data, "--need", "slots=0")
    assert zero.exit_code == 1 and "constraints.capacity.slots" in zero.stderr and "HTTP 400" in zero.stderr
    label = taskhub(live_server, "task", "create", "volume_create", "-d", data, "--label", "bad key=ssd")
    assert label.exit_code == 1 and "constraints.labels" in label.stderr
    assert not GlobalTask.objects.exists()


def test_task_create_with_labels_and_needs_is_placed_by_them(live_server: LiveServer, cluster: Cluster) -> None:
    node_update(node=node("node2"), labels={"disk": "ssd"}, capacity={"slots": 2})
    data = json.dumps(volume_data("v-c", ["node1", "node2"]))
    made = taskhub(
        live_server, "task", "create", "volume_create", "-d", data, "--id", "v-c", "--label", "disk=ssd",
        "--need", "slots=2",
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    assert "Created task v-c" in made.stdout and "node node2" in made.stdout
    task = GlobalTask.objects.get(pk="v-c")
    assert task.constraints == {"labels": {"disk": "ssd"}, "capacity": {"slots": 2}} and task.node == "node2"

    # No slots left on node2, and node1 has none: created failed, and the output says why.
    full = taskhub(
        live_server, "task", "create", "volume_create", "-d", json.dumps(volume_data("v-d", ["node1", "node2"])),
        "--id", "v-d", "--need", "slots=1",
    )  # fmt: skip
    assert full.exit_code == 0, full.output
    assert "failed" in full.stdout and "Error: Unschedulable: unschedulable" in full.stdout
    assert "node1: no slots capacity" in full.stdout and "node2: slots: needs 1, 0 of 2 free" in full.stdout
    assert GlobalTask.objects.get(pk="v-d").task_status == "failed"


def test_task_show_placement_runs_and_timings(live_server: LiveServer, cluster: Cluster) -> None:
    node_register(cluster=cluster, name="node3", transport=Node.Transport.PULL)
    node_cordon(node=node("node3"))
    first = volume_task("v-show", ["node1", "node2", "node3"])
    assert first.node == "node1" and first.placement["rule"] == "balanced"
    assert taskhub(live_server, "node", "drain", "node1", "--no-wait").exit_code == 0  # moves it to node2
    node_report("v-show", "received")
    node_report("v-show", "in_progress")
    node_report("v-show", "failed", {"error": {"type": "OSError", "message": "disk full"}})
    assert taskhub(live_server, "task", "retry", "v-show").exit_code == 0

    result = taskhub(live_server, "task", "show", "v-show")
    assert result.exit_code == 0, result.output
    out = result.stdout
    lines = [line.rstrip() for line in out.splitlines()]
    placement = "\n".join(lines[lines.index("Placement") : lines.index("Candidates")])
    assert "Rule" in placement and "balanced (the least loaded candidate that may take it)" in placement
    assert re.search(r"^Node +node2$", placement, re.MULTILINE), placement
    candidates = {line.split()[0]: line for line in section(out, "Candidates")}
    assert set(candidates) == {"node2", "node3"}  # the drain's choice, among the other nodes
    assert "chosen" in candidates["node2"]
    assert "passed over" in candidates["node3"] and "cordoned" in candidates["node3"]
    moves = section(out, "Moves")
    assert len(moves) == 1 and moves[0].split()[:2] == ["node1", "node2"] and "drain of node1" in moves[0]

    rows = list(GlobalTask.objects.get(pk="v-show").history.order_by("at", "id"))
    runs = list(dict.fromkeys(r.run_id for r in rows))
    assert len(runs) == 3
    shown_runs = section(out, "Runs")
    assert [line.split()[:3] for line in shown_runs] == [
        ["1", runs[0], "created"],
        ["2", runs[1], "moved"],
        ["3", runs[2], "retried"],
    ]
    assert shown_runs[0].split()[-1] == "moved" and shown_runs[1].split()[-1] == "failed"
    assert "pending -> received -> in_progress -> failed" in shown_runs[1]
    assert shown_runs[2].split()[-2:] == ["pending", "(now)"]

    # Run 2's timings, as computed from its history rows' times.
    at = {r.to_status: r.at.timestamp() for r in rows if r.run_id == runs[1]}
    began = next(r.at.timestamp() for r in rows if r.run_id == runs[1])
    expected = [
        duration(at["received"] - began),
        duration(at["in_progress"] - at["received"]),
        duration(at["failed"] - at["in_progress"]),
        duration(at["failed"] - began),
    ]
    timings = {line.split()[0]: line.split() for line in section(out, "Timings")}
    assert timings["2"] == ["2", runs[1][:8], *expected]
    assert timings["1"][2:] == ["-", "-", "-", timings["1"][-1]] and timings["1"][-1] != "-"  # moved: ended
    assert timings["3"][2:] == ["-", "-", "-", "-"]  # pending: nothing reached yet
    assert "task" not in timings  # unfinished: no end-to-end for the task yet

    # The history is still the last table (scripts read the rows after its title).
    history = out[out.index("History") :].splitlines()[2:]
    assert len(history) == len(rows)


def test_task_show_of_a_tracked_task_has_no_placement(live_server: LiveServer) -> None:
    task_create(task_id="tracked-1", task_type="example_task_type")
    out = taskhub(live_server, "task", "show", "tracked-1").stdout
    assert "none recorded" in out and "Constraints  none" in out
    assert section(out, "Runs")[0].split()[:3] == ["1", "(tracked:", "no"]
