"""The accuracy benchmark's protocol end to end on tiny data, on a clock the test moves:
one deadline per model with set-up included, the same test trajectories, scores equal to
``ups evaluate``'s, a stage that cannot validate in time skipped."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.manual_clock import ManualClock
from tests.tiny_runs import tiny_burgers_config

import ups.cli.train as cli_train
import ups.pipeline.runner as runner
from ups import deadline
from ups.cli import main as ups
from ups.engines.lightning import StageModule

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import accuracy  # noqa: E402
from protocol import TOTALS_TOLERANCE, ResultsFile  # noqa: E402

BUDGET, STEP, SETUP, LOAD, VAL_BATCH = 20.0, 0.25, 2.0, 1.0, 0.05


@pytest.fixture
def clock(monkeypatch):
    """Time passes only where the test says: loading a config (data opened and checked), building
    a stage (upstream checkpoints, data), each training step (UPS's and the FNO's) and each
    validation batch."""
    fake = ManualClock()
    monkeypatch.setattr(deadline, "clock", fake)

    def costs(seconds, function):
        def wrapped(*args, **kwargs):
            fake.advance(seconds)
            return function(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(cli_train, "load_config", costs(LOAD, cli_train.load_config))
    monkeypatch.setattr(accuracy, "load_config", costs(LOAD, accuracy.load_config))
    monkeypatch.setattr(runner, "build_stage", costs(SETUP, runner.build_stage))
    monkeypatch.setattr(StageModule, "training_step", costs(STEP, StageModule.training_step))
    monkeypatch.setattr(StageModule, "validation_step", costs(VAL_BATCH, StageModule.validation_step))
    adam_step = torch.optim.Adam.step

    def fno_step(self, *args, **kwargs):  # the FNO's Adam (UPS's AdamW is timed by its training_step)
        if type(self) is torch.optim.Adam:
            fake.advance(STEP)
        return adam_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", fno_step)
    return fake


TINY = accuracy.Task("burgers_nu0.01", "burgers1d", {"nu": 0.01}, nx=64)


@pytest.fixture(autouse=True)
def tiny_split(monkeypatch):
    """Cells of 8 trajectories (4 / 2 / 2), and FNO settings for Burgers whatever its grid says."""
    monkeypatch.setattr(accuracy, "SPLIT", (4, 2, 2))
    monkeypatch.setitem(accuracy.FNO_TUNED, "burgers1d", {"lr": 1e-3, "batch_size": 4, "unroll": 4})


def test_a_cell_gives_both_models_one_deadline_with_their_set_up(tmp_path, clock):
    rows = accuracy.run_cell(TINY, seed=1, budget_s=BUDGET, variant="tuned", out=tmp_path, n=8)
    by = {row["model"]: row for row in rows}
    assert {"UPS", "FNO", "persistence", "linear_lstsq"} <= set(by)
    ups_total, fno_total = float(by["UPS"]["total_seconds"]), float(by["FNO"]["total_seconds"])
    for total in (ups_total, fno_total):
        assert BUDGET * (1 - TOTALS_TOLERANCE) <= total <= BUDGET + max(STEP, 2.0)
    stages = json.loads(json.dumps(by["UPS"]["stage_seconds"]))
    assert set(stages) == {"autoencoder", "operator"} and all(v > SETUP for v in stages.values())
    assert all(v > 0 for v in by["UPS"]["stage_steps"].values()) and by["FNO"]["facts"]["steps"] > 0
    # the same two test trajectories, scored per trajectory for every model
    assert len({row["test_indices"] for row in rows}) == 1
    assert all(len(row["per_trajectory"]) == 2 for row in rows)
    results = ResultsFile(tmp_path / "accuracy.csv")
    results.replace_cell(rows)
    assert results.has(("burgers_nu0.01", "1", "20", "tuned"))


def test_a_cell_whose_totals_disagree_is_refused(tmp_path, clock, monkeypatch):
    slow_fno = accuracy.run_fno

    def late(*args, **kwargs):
        found = slow_fno(*args, **kwargs)
        return {**found, "total_seconds": found["total_seconds"] * 1.2}

    monkeypatch.setattr(accuracy, "run_fno", late)
    with pytest.raises(SystemExit, match="more than 5% apart"):
        accuracy.run_cell(TINY, seed=1, budget_s=BUDGET, variant="tuned", out=tmp_path, n=8)


def test_a_stage_that_cannot_validate_in_time_is_skipped(tmp_path, clock, monkeypatch):
    monkeypatch.setattr(StageModule, "validation_step", lambda self, batch, batch_idx: clock.advance(5.0))
    config = tiny_burgers_config(tmp_path)
    run = tmp_path / "run"
    assert (
        ups(
            [
                "pipeline",
                "--config",
                str(config),
                "--run-dir",
                str(run),
                "training.time_budget=20",
                "stages.autoencoder.epochs=1000",
            ]
        )
        == 0
    )
    status = json.loads((run / "stage_status.json").read_text())
    assert status["autoencoder"]["state"] == "skipped" and "one validation" in status["autoencoder"]["reason"]
    assert status["operator"]["state"] == "skipped" and "earlier stage" in status["operator"]["reason"]
    assert not (run / "checkpoints" / "autoencoder").exists()


def test_the_benchmark_scores_ups_predictions_as_ups_evaluate_does(tmp_path, monkeypatch):
    """The FNO's rows are scored by ``accuracy.scored``; UPS's come from ``ups evaluate``. On the
    same predictions both give the same per-trajectory figures, for the same test trajectories."""
    import ups.eval.evaluator as evaluator

    config = tiny_burgers_config(tmp_path)
    run = tmp_path / "run"
    for stage in ("autoencoder", "operator"):
        assert ups(["train", "--config", str(config), "--stage", stage, "--run-dir", str(run)]) == 0
    seen = []
    original = evaluator.suite

    def recording(pred, truth):
        seen.append((pred.detach().numpy().copy(), truth.detach().numpy().copy()))
        return original(pred, truth)

    monkeypatch.setattr(evaluator, "suite", recording)
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
                "evaluation.per_sample=true",
            ]
        )
        == 0
    )
    samples = json.loads(prefix.with_name("evaluation.json").read_text())["per_sample"]["burgers"]
    pred = np.concatenate([p for p, _ in seen]).astype(np.float64)
    truth = np.concatenate([t for _, t in seen]).astype(np.float64)
    ours = accuracy.scored(pred, truth)
    for key in accuracy.SCORES:  # float64 here, float32 in the evaluator: errors of ~1e-5 agree to ~1e-6
        np.testing.assert_allclose(ours[key], samples[key], rtol=1e-5)
    test_split = accuracy.split_arrays(config, accuracy.TASKS["burgers_nu0.01"], splits=("test",))
    assert samples["index"] == test_split["indices"]
    metrics = json.loads(prefix.with_name("evaluation.json").read_text())["metrics"]
    assert np.mean(samples["nrmse"]) == pytest.approx(metrics["nrmse"], rel=1e-9)


def test_the_native_engine_refuses_a_time_budget(tmp_path, capsys):
    config = tiny_burgers_config(tmp_path)
    assert (
        ups(
            [
                "train",
                "--config",
                str(config),
                "--stage",
                "autoencoder",
                "--engine",
                "native",
                "--run-dir",
                str(tmp_path / "run"),
                "training.time_budget=30",
            ]
        )
        == 2
    )
    assert "training.time_budget is kept by the Lightning engine" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_on_the_real_clock_both_models_end_by_the_deadline(tmp_path):
    """The same cell as above on the machine's own clock: set-up, steps and validations as they
    really take."""
    rows = accuracy.run_cell(TINY, seed=1, budget_s=BUDGET, variant="tuned", out=tmp_path, n=8)
    by = {row["model"]: row for row in rows}
    fno_step = by["FNO"]["facts"]["max_step_seconds"]
    for model in ("UPS", "FNO"):
        assert float(by[model]["total_seconds"]) <= BUDGET + max(fno_step, 2.0)
    assert float(by["UPS"]["total_seconds"]) >= BUDGET * (1 - TOTALS_TOLERANCE)
