"""benchmarks/rollout_anatomy.py: its rollout curve is the evaluator's, its floor and increment
fit mean what they say."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from tests.tiny_runs import tiny_burgers_config

from ups.cli import main as ups

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from rollout_anatomy import anatomy, increment_fit  # noqa: E402


def test_increment_fit_of_exact_still_and_half_moves():
    start = torch.zeros(3, 5)
    truth = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    assert increment_fit(start, truth, truth) == pytest.approx((1.0, 0.0))
    assert increment_fit(start, start, truth) == pytest.approx((0.0, 1.0))  # persistence
    assert increment_fit(start, truth / 2, truth) == pytest.approx((0.5, 0.5))
    assert increment_fit(start + 1, truth / 2 + 1, truth + 1) == pytest.approx((0.5, 0.5))  # increments only


def test_anatomy_of_a_trained_run_matches_the_evaluation(tmp_path):
    config = tiny_burgers_config(tmp_path)
    run = tmp_path / "run"
    for stage in ("autoencoder", "operator"):
        assert ups(["train", "--config", str(config), "--stage", stage, "--run-dir", str(run)]) == 0
    prefix = tmp_path / "evaluation"
    assert (
        ups(
            [
                "evaluate",
                "--config",
                str(config),
                "--run-dir",
                str(run),
                "--split",
                "test",
                "--output-prefix",
                str(prefix),
                "evaluation.horizon=3",
            ]
        )
        == 0
    )
    metrics = json.loads(prefix.with_name("evaluation.json").read_text())["metrics"]
    found = anatomy(config, run, "test", 3, [])
    assert len(found["rollout"]) == len(found["floor"]) == 3
    assert found["rollout"][0] == pytest.approx(metrics["one_step_nrmse"], rel=1e-4)
    assert sum(found["rollout"]) / 3 == pytest.approx(metrics["nrmse"], rel=1e-4)
    assert all(0 < f < 10 for f in found["floor"])
    gain, error = found["decoded"]
    assert error > 0 and abs(gain) < 10
