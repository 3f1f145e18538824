"""The regression test of issue 28's competence bar on 2D multi-channel fields: the exact two-channel
heat file (``tests/heat2d.py``), ``configs/defaults.yaml`` with only the data set, 4 minutes per stage.
On the test split the operator's one-step nRMSE is below persistence's and at most 1.5x the
autoencoder's reconstruction error, its 20-step rollout nRMSE at least 3x below persistence's, and
training improved it (the best checkpoint is not the first validation's). About 9 minutes on 2 cores."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import yaml
from tests.heat2d import write_heat2d

from ups.cli import main as ups

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from competence import competence, meets_bar  # noqa: E402

HORIZON = 20


@pytest.mark.slow
def test_defaults_beat_persistence_on_2d_two_channel_heat(tmp_path):
    write_heat2d(tmp_path / "2D_heat_periodic.h5")
    config = tmp_path / "heat.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "paths": {"data_dir": str(tmp_path), "runs_dir": str(tmp_path / "runs")},
                "data": {"tasks": [{"name": "heat", "path": "2D_heat_periodic.h5", "periodic": True}]},
                "training": {"max_time": "00:00:04:00"},
                "stages": {"autoencoder": {"epochs": 100_000}, "operator": {"epochs": 100_000}},
            }
        )
    )
    run = tmp_path / "run"
    for stage in ("autoencoder", "operator"):
        assert ups(["train", "--config", str(config), "--stage", stage, "--run-dir", str(run)]) == 0
    found = competence(config, run, "test", HORIZON)
    assert all(meets_bar(found).values()), found
    prefix = tmp_path / "evaluation"  # the bar's figures are ups evaluate's
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
                f"evaluation.horizon={HORIZON}",
                "evaluation.report=false",
            ]
        )
        == 0
    )
    metrics = json.loads(prefix.with_name("evaluation.json").read_text())["metrics"]
    assert metrics["nrmse"] == pytest.approx(found["rollout"], rel=1e-5)
    assert metrics["one_step_nrmse"] == pytest.approx(found["one_step"], rel=1e-5)

    with open(next((run / "logs" / "operator").rglob("metrics.csv")), newline="") as handle:
        validations = [float(row["val/nrmse"]) for row in csv.DictReader(handle) if row.get("val/nrmse")]
    status = json.loads((run / "stage_status.json").read_text())["operator"]
    assert len(validations) >= 2 and status["best_score"] < validations[0]
