"""The whole transition table of the status rules."""

from __future__ import annotations

import itertools

import pytest

from tasks_app.status import STATUS_VALUES, Verdict, judge

P, R, I, C, F, X = "pending", "received", "in_progress", "completed", "failed", "cancelled"

ALLOWED = {
    (P, R), (P, I), (P, C), (P, F), (P, X),
    (R, I), (R, C), (R, F), (R, X),
    (I, C), (I, F), (I, X),
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
def test_retry_only_takes_failed_back_to_pending(current: str, target: str) -> None:
    expected = Verdict.APPLY if (current, target) == (F, P) else Verdict.REJECT
    assert judge(current, target, retry=True) is expected


@pytest.mark.parametrize("final", [C, F, X])
def test_final_states_never_move_without_retry(final: str) -> None:
    for target in STATUS_VALUES:
        if target != final:
            assert judge(final, target) is Verdict.REJECT


def test_unknown_status_is_an_error() -> None:
    with pytest.raises(ValueError):
        judge(P, "done")
