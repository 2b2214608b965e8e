"""The whole transition table of the status rules, the aliases, and what a task may be created in."""

from __future__ import annotations

import itertools

import pytest

from workers.protocol.status import STATUS_VALUES, Verdict, canonical, judge, judge_initial

P, R, I, C, F, X = "pending", "received", "in_progress", "completed", "failed", "cancelled"
K = "cancelling"

ALLOWED = {
    (P, R), (P, I), (P, C), (P, F), (P, X), (P, K),
    (R, I), (R, C), (R, F), (R, X), (R, K),
    (I, C), (I, F), (I, X), (I, K),
    # A cancelling task ends as its node says: stopped, or finished first either way.
    (K, C), (K, F), (K, X),
}  # fmt: skip


@pytest.mark.parametrize(("current", "target"), list(itertools.product(STATUS_VALUES, STATUS_VALUES)))
def test_transition_table(current: str, target: str) -> None:
    verdict = judge(current, target)
    if current == target:
        assert verdict is Verdict.SAME
    elif (current, target) in ALLOWED:
        assert verdict is Verdict.APPLY
    else:
        assert verdict is Verdict.REJECT


@pytest.mark.parametrize(("current", "target"), list(itertools.product(STATUS_VALUES, STATUS_VALUES)))
def test_retry_only_takes_failed_or_cancelled_back_to_pending(current: str, target: str) -> None:
    expected = Verdict.APPLY if (current, target) in ((F, P), (X, P)) else Verdict.REJECT
    assert judge(current, target, retry=True) is expected


@pytest.mark.parametrize("final", [C, F, X])
def test_final_states_never_move_without_retry(final: str) -> None:
    for target in STATUS_VALUES:
        if target != final:
            assert judge(final, target) is Verdict.REJECT


def test_cancelling_never_goes_back_to_running() -> None:
    for target in (P, R, I):
        assert judge(K, target) is Verdict.REJECT


def test_unknown_status_is_an_error() -> None:
    with pytest.raises(ValueError):
        judge(P, "done")


@pytest.mark.parametrize(
    ("name", "meant"),
    [("complete", C), ("Completed", C), ("COMPLETE", C), ("Queued", P), ("queued", P), ("Received", R), (F, F)],
)
def test_the_names_real_callers_send_are_aliases(name: str, meant: str) -> None:
    assert canonical(name) == meant


@pytest.mark.parametrize("name", ["done", "", "finished", "complet", None, 3])
def test_other_names_mean_nothing(name: object) -> None:
    assert canonical(name) is None


@pytest.mark.parametrize("status", STATUS_VALUES)
def test_an_executed_task_starts_pending_and_a_tracked_one_anywhere_but_cancelling(status: str) -> None:
    assert judge_initial(status, executed=True) is (Verdict.APPLY if status == P else Verdict.REJECT)
    assert judge_initial(status, executed=False) is (Verdict.REJECT if status == K else Verdict.APPLY)
