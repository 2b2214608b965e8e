"""The fault suite (faults/): its counting, on made-up records, and its bounded run (`python -m faults --quick`)
against a stack of its own, which must lose nothing, run nothing twice and move nothing backwards.

Select the run with `-m faults`; leave it out with `-m "not faults"`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from faults import EXECUTIONS_LOG
from faults.audit import Change, NodeRecords, Row, moved_backwards
from faults.client import Answer, tally
from faults.experiments import QUICK_RUN
from faults.report import failed, table
from tests.conftest import ROOT

# The quick run's budget: a few minutes of experiments, plus each one's settle time if tasks stay stuck.
QUICK_TIMEOUT_SECONDS = 15 * 60


def _changes(*steps: tuple[str, str, str]) -> list[Change]:
    return [Change("t1", frm, to, float(i), run) for i, (frm, to, run) in enumerate(steps)]


def test_moved_backwards_counts_rows_that_go_back_or_skip_the_current_status() -> None:
    forward = _changes(("", "pending", "r1"), ("pending", "received", "r1"), ("received", "completed", "r1"))
    assert moved_backwards(forward) == 0
    # An explicit retry (failed -> pending, as a new run) is the one way out of a final status.
    retried = _changes(("", "pending", "r1"), ("pending", "failed", "r1"), ("failed", "pending", "r2"))
    assert moved_backwards(retried) == 0
    back = _changes(("", "pending", "r1"), ("pending", "in_progress", "r1"), ("in_progress", "received", "r1"))
    assert moved_backwards(back) == 1
    out_of_final = _changes(("", "pending", "r1"), ("pending", "completed", "r1"), ("completed", "failed", "r1"))
    assert moved_backwards(out_of_final) == 1
    # A row judged against a status the task was no longer in: applied out of order.
    skipped = _changes(("", "pending", "r1"), ("pending", "in_progress", "r1"), ("received", "completed", "r1"))
    assert moved_backwards(skipped) == 1


def test_node_records_find_a_run_finished_on_two_nodes_and_unsent_reports(tmp_path: Path) -> None:
    import sqlite3

    dirs = {name: tmp_path / name for name in ("node1", "node2")}
    for name, data_dir in dirs.items():
        runs = data_dir / ".taskhub" / "runs"
        runs.mkdir(parents=True)
        (runs / "run-a.0.done.json").write_text(json.dumps({"ok": True, "result": {}}))
        # A fan-out part's outcome (one more name field) is not the run's own handler.
        (runs / "run-b.0.part.done.json").write_text(json.dumps({"ok": True, "result": {}}))
        (data_dir / EXECUTIONS_LOG).write_text(f"run-a t1\nrun-c t3\n{'run-c t3' if name == 'node1' else ''}\n")
    with sqlite3.connect(dirs["node2"] / ".taskhub" / "outbox.sqlite3") as db:
        db.execute("CREATE TABLE report (seq INTEGER PRIMARY KEY, run_id TEXT, body TEXT)")
        db.execute("INSERT INTO report (run_id, body) VALUES ('run-d', '{}')")
    records = NodeRecords(dirs)

    assert records.outcomes({"run-a", "run-b"}) == {"run-a": [("node1", True), ("node2", True)]}
    assert records.executions() == {"run-a": 2, "run-c": 3}
    assert records.unsent("node2") == {"run-d"}
    assert records.unsent("node1") == set()


def test_tally_and_table_say_what_the_api_answered_and_what_failed() -> None:
    answers = [Answer(0, "POST /task", 503, "JSON", 0.01)] * 3 + [Answer(0, "GET /healthz", None, "refused", 0.0)]
    assert tally(answers) == "503 JSON x3, refused x1"
    assert tally(answers, skip_ok=True) == "4 answers; errors: 503 JSON x3, refused x1"
    assert tally([]) == "-"
    good = Row("x", submitted=5, terminal=5, recovery=1.25, api="503 JSON x3")
    stuck = Row("y", submitted=5, terminal=4, stuck=1, notes=["stuck: 1 in_progress on node1"])
    text = table([good, stuck])
    assert "| x          | 5         | 5        | 0    | 0         | 0               | 0     | 1.2 s" in text
    assert "not recovered" in text and "- y: stuck: 1 in_progress on node1" in text
    assert not failed(good) and failed(stuck)


@pytest.mark.faults
@pytest.mark.slow
@pytest.mark.skipif(
    bool(os.environ.get("DATABASE_URL")),
    reason="the suite starts its own PostgreSQL whatever the test database is: run it once, in the SQLite pass",
)
def test_quick_fault_run_loses_nothing_runs_nothing_twice_moves_nothing_backwards(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    suite = subprocess.Popen(
        [sys.executable, "-m", "faults", "--quick", "--json", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        stdout, stderr = suite.communicate(timeout=QUICK_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        # SIGTERM, not subprocess.run's SIGKILL: the suite then stops the stack it started.
        suite.terminate()
        stdout, stderr = suite.communicate(timeout=60)
    said = f"exit {suite.returncode}\n{stdout[-6000:]}\n{stderr[-4000:]}"
    assert out.exists(), said
    rows = json.loads(out.read_text())
    assert len(rows) == len(QUICK_RUN), said
    for row in rows:
        assert not [n for n in row["notes"] if n.startswith("error:")], said
        skipped = any(n.startswith("skipped:") for n in row["notes"])
        assert skipped or row["submitted"] > 0, said
        assert (row["lost"], row["run_twice"], row["moved_backwards"]) == (0, 0, 0), said
        # Every task the run created is in the table and accounted for: final, or counted as stuck.
        assert row["terminal"] + row["stuck"] <= row["submitted"], said
    by_name = {row["experiment"]: row for row in rows}
    outage = next(row for name, row in by_name.items() if name.startswith("PostgreSQL"))
    if not outage["notes"]:
        # The database down: only JSON answers, never Django's HTML error page.
        assert "HTML" not in outage["api"] and "JSON" in outage["api"], said
