"""Task-type handlers doing their real work in a node's data directory (no broker needed here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from workers.families import blocks, vdags, volumes
from workers.node.context import NodeRunContext
from workers.node.runner import run_task
from workers.protocol import specs as registry
from workers.protocol.errors import HandlerError, PayloadError

# Handlers read their run's end marker at each safe point: a real Redis, under this test's own prefix.
pytestmark = pytest.mark.redis


@pytest.fixture(autouse=True)
def _stream(redis_stream: Any) -> None:
    return None


SEED_TYPES = ["vdag_creation", "block_alloc", "cluster_infra_creation", "cluster_infra_remove", "node_addition",
              "node_removal"]  # fmt: skip
VOLUME_TYPES = ["volume_create", "volume_start", "volume_stop", "volume_delete"]


def ctx(tmp_path: Path, node: str = "node1", task_id: str = "t1", run_id: str = "") -> NodeRunContext:
    return NodeRunContext(
        task_id=task_id, run_id=run_id or f"run-{task_id}", task_type="x", node=node, data_dir=tmp_path
    )


def test_the_seed_and_kadalu_types_are_registered() -> None:
    assert set(SEED_TYPES + VOLUME_TYPES) <= set(registry.known())


@pytest.mark.parametrize(
    ("task_type", "data", "field"),
    [
        ("block_alloc", {"cluster": "c", "node": "n"}, "blocks"),
        ("block_alloc", {"cluster": "c", "node": "n", "blocks": 0}, "blocks"),
        ("block_alloc", {"cluster": "c", "blocks": 1}, "node"),
        ("volume_create", {"cluster": "c", "name": "v"}, "storage_units"),
        ("volume_create", {"cluster": "c", "name": "v", "type": "mirror", "storage_units": [{"node": "a"}]}, "type"),
        ("volume_create", {"cluster": "c", "name": "v", "storage_units": [{"node": "a"}]}, "storage_units"),
        ("volume_create", {"cluster": "c", "name": "v", "storage_units": [{"node": "a"}, {}]},
         "storage_units[1].node"),
        ("volume_create",
         {"cluster": "c", "name": "v", "storage_units": [{"node": "a"}, {"node": "b", "path": "../x"}]},
         "storage_units[1].path"),
        ("volume_create", {"cluster": "c", "name": "bad name", "storage_units": [{"node": "a"}, {"node": "b"}]},
         "name"),
        ("cluster_infra_creation", {"cluster": "c", "nodes": []}, "nodes"),
        ("vdag_creation", {"cluster": "c", "node": "n", "name": "g", "vertices": []}, "vertices"),
        ("vdag_creation", {"cluster": "c", "node": "n", "name": "g", "vertices": [{"id": "a", "allocation": "x"}],
                           "edges": [["a", "b"]]}, "edges[0]"),
    ],
)  # fmt: skip
def test_bad_payloads_name_the_field(task_type: str, data: dict[str, Any], field: str) -> None:
    ttype = registry.get(task_type)
    assert ttype is not None
    with pytest.raises(PayloadError) as err:
        ttype.validate(data)
    assert err.value.field == field


def test_vdag_must_be_acyclic() -> None:
    data = {
        "cluster": "c",
        "node": "n",
        "name": "g",
        "vertices": [{"id": v, "allocation": "x"} for v in "abc"],
        "edges": [["a", "b"], ["b", "c"], ["c", "a"]],
    }
    with pytest.raises(PayloadError, match="cycle"):
        vdags.validate(data)
    data["edges"] = [["a", "b"], ["b", "c"], ["a", "c"]]
    assert vdags.validate(data) is data


def test_block_alloc_reserves_against_capacity(tmp_path: Path, settings: Any) -> None:
    settings.TASKHUB_NODE_CAPACITY_BLOCKS = 10
    data = {"cluster": "c", "node": "node1", "blocks": 6}
    assert blocks.alloc(ctx(tmp_path, task_id="a1"), data) == {"allocation_id": "a1", "blocks": 6, "free_blocks": 4}
    # Asking again for the same allocation does not reserve twice.
    assert blocks.alloc(ctx(tmp_path, task_id="a1"), data)["free_blocks"] == 4
    with pytest.raises(HandlerError, match=r"not enough free blocks on node .*: asked for 6, 4 free of 10"):
        blocks.alloc(ctx(tmp_path, task_id="a2"), data)
    assert blocks.allocated(tmp_path) == {"a1": 6}


def test_vdag_refers_to_blocks_allocated_on_the_node(tmp_path: Path) -> None:
    blocks.alloc(ctx(tmp_path, task_id="alloc-1"), {"cluster": "c", "node": "node1", "blocks": 1})
    graph = {"cluster": "c", "node": "node1", "name": "g1", "vertices": [{"id": "a", "allocation": "alloc-1"}]}
    result = vdags.run(ctx(tmp_path, task_id="v1"), graph)
    assert json.loads(Path(result["path"]).read_text())["vertices"] == graph["vertices"]
    graph["vertices"] = [{"id": "a", "allocation": "nope"}]
    with pytest.raises(HandlerError, match="allocation nope, which is not allocated on node node1"):
        vdags.run(ctx(tmp_path, task_id="v2"), graph)


def test_volume_parts_create_set_state_and_delete_units(tmp_path: Path) -> None:
    share = {"volume": "vol1", "type": "replicate", "units": [{"index": 0, "path": None}]}
    made = volumes.create_part(ctx(tmp_path), share)
    unit = Path(made["units"][0]["path"])
    assert unit == tmp_path / "volumes" / "vol1" / "unit0"
    assert json.loads((unit / volumes.META).read_text())["volume"] == "vol1"
    volumes.set_state_part(ctx(tmp_path), {**share, "state": "started"})
    assert json.loads((unit / volumes.META).read_text())["state"] == "started"
    # Another volume may not take over a directory that holds this one's unit.
    with pytest.raises(HandlerError, match="already holds a unit of volume 'vol1'"):
        volumes.create_part(ctx(tmp_path), {**share, "volume": "vol2", "units": [{"index": 0, "path": str(unit)}]})
    volumes.delete_part(ctx(tmp_path), share)
    assert not unit.exists() and not (tmp_path / "volumes" / "vol1").exists()


def test_a_run_is_recorded_once_and_replayed(tmp_path: Path, settings: Any) -> None:
    settings.TASKHUB_NODE_NAME = "node1"
    settings.TASKHUB_NODE_DATA_DIR = str(tmp_path)
    settings.TASKHUB_NODE_CAPACITY_BLOCKS = 5
    data = {"cluster": "c", "node": "node1", "blocks": 5}
    first = run_task(task_id="once", run_id="run-1", task_type="block_alloc", task_data=data, attempt=0)
    # A second delivery of the same message returns the recorded result without running again
    # (running again would find no free blocks and fail).
    assert run_task(task_id="once", run_id="run-1", task_type="block_alloc", task_data=data, attempt=0) == first
    with pytest.raises(HandlerError, match="not enough free blocks"):
        run_task(task_id="other", run_id="run-2", task_type="block_alloc", task_data=data, attempt=0)
    with pytest.raises(HandlerError, match="not enough free blocks"):  # the failure is replayed too
        run_task(task_id="other", run_id="run-2", task_type="block_alloc", task_data=data, attempt=0)


def test_users_register_their_own_types() -> None:
    import tests.handlers_for_tests  # noqa: F401  (registers test_sleep, as TASKHUB_HANDLER_MODULES would)

    ttype = registry.get("test_sleep")
    assert ttype is not None
    assert ttype.participants({"node": "n9"}) == ["n9"]
    with pytest.raises(PayloadError):
        ttype.validate({"node": "n9", "seconds": "soon"})


def test_errors_keep_their_details_through_pickling() -> None:
    """Celery pickles exceptions; the per-node answers of a fan-out must survive it."""
    import pickle

    from workers.protocol.errors import FanOutFailed

    err = FanOutFailed({"a": {"ok": True, "result": {}}, "b": {"ok": False, "error": {"message": "down"}}})
    back = pickle.loads(pickle.dumps(err))  # noqa: S301 (our own object)
    assert type(back) is FanOutFailed and back.details == err.details and str(back) == str(err)
    assert pickle.loads(pickle.dumps(HandlerError("x", {"k": 1}))).details == {"k": 1}  # noqa: S301
    assert pickle.loads(pickle.dumps(PayloadError("f", "bad"))).field == "f"  # noqa: S301


def test_a_stale_allocation_of_another_run_is_replaced_not_reused(tmp_path: Path, settings: Any) -> None:
    """A run that allocated but never completed on the server (failed by hand, deleted, its node declared
    dead) left its entry: the next run under the same id replaces it with its own size."""
    settings.TASKHUB_NODE_CAPACITY_BLOCKS = 10
    data = {"cluster": "c", "node": "node1", "blocks": 5}
    blocks.alloc(ctx(tmp_path, task_id="a1", run_id="run-old"), data)
    again = blocks.alloc(ctx(tmp_path, task_id="a1", run_id="run-new"), {**data, "blocks": 7})
    assert again == {"allocation_id": "a1", "blocks": 7, "free_blocks": 3, "replaced": {"run": "run-old", "blocks": 5}}
    assert blocks.allocated(tmp_path) == {"a1": 7}
    # Too big even without the stale entry: the entry stays as it was.
    with pytest.raises(HandlerError, match="asked for 11, 10 free of 10"):
        blocks.alloc(ctx(tmp_path, task_id="a1", run_id="run-third"), {**data, "blocks": 11})
    assert blocks.allocated(tmp_path) == {"a1": 7}


def test_a_cancelled_run_confirms_only_if_no_delivery_of_it_runs_or_ran_here(
    tmp_path: Path, settings: Any, redis_stream: Any
) -> None:
    import threading

    from workers.node.guard import RunGuard
    from workers.protocol import run_end
    from workers.protocol.errors import Cancelled, Superseded

    settings.TASKHUB_NODE_NAME = "node1"
    settings.TASKHUB_NODE_DATA_DIR = str(tmp_path)
    run_end.mark("run-c", run_end.End.CANCEL)
    args: dict[str, Any] = {
        "task_id": "t-c",
        "run_id": "run-c",
        "task_type": "noop",
        "task_data": {"node": "node1"},
        "attempt": 0,
    }
    with pytest.raises(Cancelled, match="cancelled before it started"):  # nothing of it here: confirm
        run_task(**args)
    # Another delivery of the run is running here (it holds the run's lock): it reports for itself.
    guard = RunGuard(tmp_path / ".taskhub", "run-c.0")
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with guard.hold():
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10)
        with pytest.raises(Superseded, match="running or has run here"):
            run_task(**args)
    finally:
        release.set()
        holder.join()
    guard.record({"ok": True, "result": {}})  # ... or it has run here already
    with pytest.raises(Superseded, match="running or has run here"):
        run_task(**args)
