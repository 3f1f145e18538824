"""Promotion gates: baseline choice, the improvement rule, ratio limits, skipped and provisional cases."""

from __future__ import annotations

import pytest

from ups.pipeline.gates import decide, select_baseline

ROWS = [
    {"run_id": "r1", "role": "baseline", "label": "old", "nrmse": "0.30", "crmse": "0.010"},
    {"run_id": "r2", "role": "full_eval", "label": "tried", "nrmse": "0.20", "crmse": "0.010"},
    {"run_id": "r3", "role": "champion", "label": "champ", "nrmse": "0.25", "crmse": "0.010"},
    {"run_id": "r4", "role": "champion", "label": "champ2", "nrmse": "0.22", "crmse": "0.020"},
    {"run_id": "me", "role": "champion", "label": "mine", "nrmse": "0.01"},
]


def test_the_baseline_is_the_best_row_of_the_most_preferred_role_never_the_candidates_own():
    assert select_baseline(ROWS, "nrmse", "me")["label"] == "champ2"  # champions first, then the lowest
    assert select_baseline(ROWS[:2], "nrmse", "me")["label"] == "tried"  # no champion: full_eval
    assert select_baseline(ROWS[:1], "nrmse", "me")["label"] == "old"
    assert select_baseline(ROWS[4:], "nrmse", "me") is None


def test_pass_needs_the_minimum_improvement_and_every_ratio_limit():
    win = decide(
        "small",
        {"nrmse": 0.20, "crmse": 0.021},
        ROWS,
        metric="nrmse",
        min_delta=0.01,
        ratio_limits={"crmse": 1.1},
        candidate_run="me",
    )
    assert win.passed and not win.provisional and win.baseline == pytest.approx(0.22)
    assert [c.status for c in win.checks] == ["pass"] and win.checks[0].ratio == pytest.approx(1.05)
    too_little = decide(
        "small", {"nrmse": 0.215}, ROWS, metric="nrmse", min_delta=0.01, ratio_limits={}, candidate_run="me"
    )
    assert not too_little.passed and "improvement 0.005 < required 0.01" in " ".join(too_little.messages)
    leaky = decide(
        "full",
        {"nrmse": 0.10, "crmse": 0.05},
        ROWS,
        metric="nrmse",
        min_delta=0.0,
        ratio_limits={"crmse": 1.5},
        candidate_run="me",
    )
    assert (
        not leaky.passed
        and leaky.checks[0].status == "fail"
        and "crmse ratio 2.5 > limit 1.5" in leaky.messages[1]
    )


def test_missing_metrics_are_skipped_or_fail_and_no_baseline_is_a_provisional_pass():
    skipped = decide(
        "small",
        {"nrmse": 0.1},
        ROWS,
        metric="nrmse",
        min_delta=0.0,
        ratio_limits={"brmse": 2.0},
        candidate_run="me",
    )
    assert skipped.passed and skipped.checks[0].status == "skipped"
    assert any("'brmse' skipped" in m for m in skipped.messages)
    missing = decide("small", {}, ROWS, metric="nrmse", min_delta=0.0, ratio_limits={}, candidate_run="me")
    assert not missing.passed and "has no 'nrmse'" in missing.messages[0]
    first = decide(
        "small", {"nrmse": 0.5}, [], metric="nrmse", min_delta=0.1, ratio_limits={}, candidate_run="me"
    )
    assert first.passed and first.provisional and "provisional pass" in first.messages[0]
    assert first.to_dict()["provisional"] is True


def test_only_rows_evaluated_like_the_candidate_can_be_its_baseline():
    rows = [
        {**ROWS[3], "split": "test", "horizon": "10", "resolution": ""},
        {**ROWS[2], "split": "val", "horizon": "10", "resolution": ""},
    ]
    val = {"split": "val", "horizon": 10, "resolution": None}
    assert (
        select_baseline(rows, "nrmse", "me", val)["label"] == "champ"
    )  # the better test row is not comparable
    assert select_baseline(rows, "nrmse", "me", {**val, "horizon": 5}) is None
    alone = decide(
        "small",
        {"nrmse": 0.3},
        rows,
        metric="nrmse",
        min_delta=0.0,
        ratio_limits={},
        candidate_run="me",
        comparable={**val, "horizon": 5},
    )
    assert (
        alone.provisional
        and "evaluated like this candidate (split val, horizon 5, resolution -)" in alone.messages[0]
    )


@pytest.mark.parametrize(
    "env, zero",
    [
        ({}, True),
        ({"RANK": "0"}, True),
        ({"SLURM_PROCID": "2"}, False),
        ({"LOCAL_RANK": "1"}, False),
        ({"NODE_RANK": "1", "LOCAL_RANK": "0"}, False),
        ({"RANK": "0", "SLURM_PROCID": "3"}, True),
    ],
)
def test_rank_zero_is_read_as_lightning_reads_it(monkeypatch, env, zero):
    """Only rank 0 writes summaries, leaderboards and W&B: under torchrun, SLURM or Lightning's launcher."""
    from ups.pipeline.runner import is_rank_zero

    for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK", "NODE_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert is_rank_zero() is zero


def test_new_run_ids_sort_by_time_and_differ_within_one_second():
    from ups.runs import RunDir

    ids = [RunDir.new_id() for _ in range(200)]
    assert len(set(ids)) == 200 and all(len(i.split("-")) == 3 and len(i.split("-")[2]) == 6 for i in ids)
