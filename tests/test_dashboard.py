"""The operator's dashboard in the admin: what it shows, who may see it, and the SVG chart."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.etree import ElementTree

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tasks_app.fleet.services import cluster_ensure, node_register
from tasks_app.models import GlobalTask, Node, TaskStatusChange
from tasks_app.ops import dashboard_selectors as sel
from tasks_app.ops.dashboard_chart import nice_step, throughput_svg
from tasks_app.ops.objectives import parse
from tasks_app.tasks.services import task_create
from tasks_app.tasks.transitions import Origin, StatusUpdate, task_transition

pytestmark = pytest.mark.django_db

URL = "/admin/dashboard/"


@pytest.fixture
def staff(client: Client) -> Client:
    client.force_login(User.objects.create_user("ops", password="pw-for-tests-only", is_staff=True))
    return client


@pytest.fixture
def data() -> None:
    demo = cluster_ensure(name="demo")
    for name in ("node1", "node2"):
        node_register(cluster=demo, name=name)
    Node.objects.filter(name="node1").update(last_heartbeat=datetime.now(UTC))
    for ttype, node_name in (("vdag_report", "node1"), ("vdag_report", "node2"), ("block_audit", "node2")):
        task, _ = task_create(task_type=ttype)
        GlobalTask.objects.filter(pk=task.pk).update(node=node_name)  # as the dispatcher would
        task_transition(update=StatusUpdate(task.task_id, "failed", source=node_name))
    done, _ = task_create(task_type="block_audit")
    task_transition(update=StatusUpdate(done.task_id, "completed"))
    task_create(task_type="block_audit")  # pending


def test_renders_for_staff_with_the_figures(staff: Client, data: None, settings: Any) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # Redis down: shown on the page, not a 500
    resp = staff.get(URL)
    assert resp.status_code == 200
    html = resp.content.decode()
    assert "Operator&#x27;s dashboard" in html or "Operator's dashboard" in html
    assert "<svg" in html and "Tasks finished per minute" in html
    assert "Redis unavailable" in html
    ctx = resp.context
    assert ctx["counts"].by_status["failed"] == 3
    assert ctx["counts"].by_status["pending"] == 1
    by_type = {row.task_type: row for row in ctx["counts"].by_type}
    assert by_type["vdag_report"].counts["failed"] == 2 and by_type["block_audit"].total == 3
    assert ctx["failures_by_type"] == [("vdag_report", 2), ("block_audit", 1)]
    assert ctx["failures_by_node"] == [("node2", 2), ("node1", 1)]
    assert ctx["nodes_online"] == 1 and len(ctx["nodes"]) == 2
    assert ctx["finished_last_hour"] == 4
    for needle in ("vdag_report", "block_audit", "node1", "node2", "1 / 2"):
        assert needle in html


def test_non_staff_are_sent_to_the_login(client: Client) -> None:
    resp = client.get(URL)
    assert resp.status_code == 302 and resp["Location"].startswith("/admin/login/")
    client.force_login(User.objects.create_user("someone", password="pw-for-tests-only"))
    resp = client.get(URL)
    assert resp.status_code == 302 and resp["Location"].startswith("/admin/login/")


def test_the_admin_index_links_the_dashboard(staff: Client) -> None:
    resp = staff.get("/admin/")
    assert resp.status_code == 200
    assert f'href="{URL}"'.encode() in resp.content
    assert b"Site administration" in resp.content or b"app-tasks_app" in resp.content  # still the index


def test_empty_dashboard_renders(staff: Client) -> None:
    resp = staff.get(URL)
    assert resp.status_code == 200
    assert b"No tasks yet." in resp.content and b"No failures in the last hour." in resp.content


def test_failures_older_than_an_hour_are_left_out() -> None:
    task, _ = task_create(task_type="old_failure")
    task_transition(update=StatusUpdate(task.task_id, "failed"))
    TaskStatusChange.objects.filter(task=task).update(at=datetime.now(UTC) - timedelta(hours=2))
    by_type, by_node = sel.failures_since(datetime.now(UTC) - timedelta(hours=1))
    assert by_type == [] and by_node == []


def test_throughput_counts_finished_changes_per_minute() -> None:
    now = datetime(2030, 1, 1, 12, 30, 40, tzinfo=UTC)
    task, _ = task_create(task_type="t")

    def change(to: str, minutes_ago: float) -> None:
        at = now - timedelta(minutes=minutes_ago)
        TaskStatusChange.objects.create(task=task, from_status="in_progress", to_status=to, at=at)

    change("completed", 0)  # this minute (12:30)
    change("completed", 0.2)
    change("failed", 5)  # 12:25
    change("cancelled", 59)  # 11:31, the first bucket
    change("completed", 61)  # outside the window
    change("in_progress", 1)  # not a final status
    minutes = sel.throughput(60, now)
    assert len(minutes) == 60
    assert minutes[0].start == datetime(2030, 1, 1, 11, 31, tzinfo=UTC)
    assert minutes[-1].start == datetime(2030, 1, 1, 12, 30, tzinfo=UTC)
    assert minutes[-1].counts == {"completed": 2, "failed": 0, "cancelled": 0}
    assert minutes[-6].counts["failed"] == 1
    assert minutes[0].counts["cancelled"] == 1
    assert sum(m.total for m in minutes) == 4


def test_the_chart_is_well_formed_svg_with_a_bar_per_minute() -> None:
    start = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    counts = [{"completed": i % 7, "failed": i % 3, "cancelled": 0} for i in range(60)]
    minutes = [sel.Minute(start + timedelta(minutes=i), c) for i, c in enumerate(counts)]
    svg = str(throughput_svg(minutes))
    root = ElementTree.fromstring(svg)  # noqa: S314  # our own output
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == f"{ns}svg"
    groups = root.findall(f"{ns}g")
    assert len(groups) == 60
    titles = [g.find(f"{ns}title") for g in groups]
    assert titles[8] is not None and titles[8].text == "12:08 UTC: 1 completed, 2 failed, 0 cancelled"
    bars = root.findall(f".//{ns}rect[@class='bar completed']")
    assert len(bars) == sum(1 for m in minutes if m.counts["completed"])
    assert "now" in svg and "12:00" in svg
    empty = ElementTree.fromstring(str(throughput_svg([sel.Minute(start, {})])))  # noqa: S314
    assert empty.find(f"{ns}g/{ns}title") is not None


@pytest.mark.parametrize(("peak", "step"), [(0, 1), (3, 1), (7, 2), (10, 5), (37, 10), (180, 50), (1234, 500)])
def test_nice_steps(peak: int, step: int) -> None:
    assert nice_step(peak) == step


def test_the_node_table_shows_scheduling_labels_and_capacity(staff: Client) -> None:
    from tasks_app.fleet.scheduling import node_cordon, node_drain
    from tasks_app.fleet.services import node_update

    demo = cluster_ensure(name="demo")
    cordoned, drained, busy = (node_register(cluster=demo, name=n) for n in ("node1", "node2", "node3"))
    node_cordon(node=cordoned)
    node_drain(node=drained, source="test")  # nothing on it
    node_update(node=busy, labels={"disk": "ssd"}, capacity={"slots": 4})
    Node.objects.filter(pk=busy.pk).update(capacity_blocks=10)
    task, _ = task_create(task_type="vdag_report")
    GlobalTask.objects.filter(pk=task.pk).update(node="node3", constraints={"capacity": {"slots": 3}})  # as placement
    html = staff.get(URL).content.decode()
    nodes_table = html[html.index('id="nodes"') :]
    rows = {n: nodes_table[nodes_table.index(f">{n}</a>") :].split("</tr>")[0] for n in ("node1", "node2", "node3")}
    assert '<strong class="th-sched-cordoned">cordoned</strong>' in rows["node1"]
    assert '<strong class="th-sched-drained">drained</strong>' in rows["node2"]
    assert "schedulable" in rows["node3"] and "<code>disk=ssd</code>" in rows["node3"]
    assert "blocks 0 / 10" in rows["node3"] and "slots 3 / 4" in rows["node3"]
    by_name = {row.name: row for row in sel.nodes()}
    assert (by_name["node1"].scheduling, by_name["node2"].scheduling) == ("cordoned", "drained")
    assert by_name["node3"].unfinished == 1


def _finished_run(task_type: str, node: str, *, queue: float, run: float) -> None:
    """An executed task whose run started ten minutes ago and finished after queue + run seconds, as its
    node reported (each report carries its own time)."""
    task, _ = task_create(task_type=task_type, task_data={"node": node}, execute=True)
    start = float(int(time.time()) - 600)
    TaskStatusChange.objects.filter(task=task).update(at=datetime.fromtimestamp(start, UTC))
    for status, after in (("received", queue), ("in_progress", queue), ("completed", queue + run)):
        update = StatusUpdate(
            task.task_id, status, source="node:test", run_id=task.run_id, origin=Origin.NODE, at=start + after
        )
        task_transition(update=update)


def test_latency_section_marks_the_rows_that_miss_their_objective(staff: Client, settings: Any) -> None:
    import tests.handlers_for_tests  # noqa: F401  (registers test_sleep)

    demo = cluster_ensure(name="demo")
    for name in ("n1", "n2"):
        node_register(cluster=demo, name=name)
    _finished_run("noop", "n1", queue=1, run=3)  # end to end 4 s
    _finished_run("noop", "n2", queue=5, run=25)  # end to end 30 s
    _finished_run("test_sleep", "n1", queue=0.5, run=2)  # no objective
    settings.TASKHUB_LATENCY_OBJECTIVES = parse("noop=end_to_end:p95:10,<b>odd</b>=run_time:p50:1")
    resp = staff.get(URL)
    assert resp.status_code == 200
    section = resp.content.decode().split('id="latency"')[1].split("</div>")[0]
    assert "Latency (last hour)" in section and "1 missed its objective" in section
    [missed] = re.findall(r'<tr class="miss">(.*?)</tr>', section, re.DOTALL)
    assert "<td>n2</td>" in missed and '<strong class="th-offline">missed</strong>' in missed
    assert "end_to_end p95 ≤ 10 s" in missed and '<td class="num th-judged">30</td>' in missed
    rows = section.split("<tbody>")[1].split("<tr")[1:]
    assert len(rows) == 3
    noop_n1, test_sleep_n1 = rows[0], rows[2]
    assert "<td>n1</td>" in noop_n1 and '<span class="th-online">met</span>' in noop_n1 and "miss" not in noop_n1
    assert '<td class="num th-judged">4</td>' in noop_n1  # the end-to-end p95 the objective is about
    assert ">test_sleep</a>" in test_sleep_n1 and "none set" in test_sleep_n1 and "miss" not in test_sleep_n1
    # queue wait p50 p95 p99, run time p50 p95 p99, end to end p50 p95 p99 of the one test_sleep run.
    assert re.findall(r'<td class="num">([^<]*)</td>', test_sleep_n1)[1:] == ["0.50"] * 3 + ["2"] * 3 + ["2.50"] * 3
    # Settings' text is escaped like everything else on the page.
    assert "<code>&lt;b&gt;odd&lt;/b&gt;</code> run_time p50 ≤ 1 s" in section and "<b>odd" not in section
    lines = resp.context["latency"]["lines"]
    assert [(x.row.task_type, x.row.node, x.missed) for x in lines] == [
        ("noop", "n1", False), ("noop", "n2", True), ("test_sleep", "n1", False)
    ]  # fmt: skip
    assert lines[1].judgement.value == 30.0
    # Not a live section: the fragment the page refetches on every event leaves it (and its query) out.
    live = staff.get(URL, {"fragment": "live"})
    assert "latency" not in live.context and 'id="latency"' not in live.content.decode()


def test_latency_section_without_runs_or_objectives(staff: Client) -> None:
    section = staff.get(URL).content.decode().split('id="latency"')[1].split("</div>")[0]
    assert "No runs finished in the last hour." in section and "none set" in section and "miss" not in section
