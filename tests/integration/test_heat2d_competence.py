"""The regression test of issue 28's competence bar on 2D multi-channel fields: the exact two-channel
heat file (``tests/heat2d.py``), ``configs/defaults.yaml`` with only the data set, 4 minutes per stage.
On the test split the operator's one-step nRMSE is below persistence's and at most 1.5x the
autoencoder's reconstruction error, its 20-step rollout nRMSE at least 3x below persistence's, and
training improved it (the best checkpoint is not the first validation's). About 9 minutes on 2 cores."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import yaml

from tests.heat2d import write_heat2d
from ups.cli import main as ups
from ups.config import load_config
from ups.eval.metrics import nrmse
from ups.eval.run import EvaluationRequest, build_evaluator, checkpoints_of
from ups.stages.batch import flat_points

HORIZON = 20


@pytest.mark.slow
def test_defaults_beat_persistence_on_2d_two_channel_heat(tmp_path):
    write_heat2d(tmp_path / "2D_heat_periodic.h5")
    config = tmp_path / "heat.yaml"
    config.write_text(yaml.safe_dump({
        "paths": {"data_dir": str(tmp_path), "runs_dir": str(tmp_path / "runs")},
        "data": {"tasks": [{"name": "heat", "path": "2D_heat_periodic.h5", "periodic": True}]},
        "training": {"max_time": "00:00:04:00"},
        "stages": {"autoencoder": {"epochs": 100_000}, "operator": {"epochs": 100_000}}}))
    run = tmp_path / "run"
    for stage in ("autoencoder", "operator"):
        assert ups(["train", "--config", str(config), "--stage", stage, "--run-dir", str(run)]) == 0
    prefix = tmp_path / "evaluation"
    assert ups(["evaluate", "--config", str(config), "--run-dir", str(run), "--split", "test", "--output-prefix",
                str(prefix), f"evaluation.horizon={HORIZON}", "evaluation.report=false"]) == 0
    metrics = json.loads(prefix.with_name("evaluation.json").read_text())["metrics"]

    op = build_evaluator(load_config(config), checkpoints_of(EvaluationRequest(run_dir=run))).operator
    task = op.dyn_tasks[0]
    persistence_one, persistence_rollout, reconstruction = [], [], []
    coords = torch.from_numpy(task.file.coordinates())                          # [X, Y, 2]
    for trajectory in task.split.indices("test"):
        u = torch.from_numpy(task.file.trajectory(trajectory, slice(0, HORIZON + 1)))  # physical [H+1, X, Y, C]
        steps = [float(nrmse(u[:1], u[k:k + 1])) for k in range(1, HORIZON + 1)]
        persistence_one.append(steps[0])
        persistence_rollout.append(np.mean(steps))
        with torch.no_grad():  # the autoencoder's reconstruction of the same frames, as evaluation decodes
            z = op.model.encoder(task.normalizer.normalize(u), coords.expand(len(u), *coords.shape))
            decoded = op.model.decoder(z, coords.reshape(1, -1, 2).expand(len(u), -1, -1), channels=u.shape[-1])
        reconstruction.append(float(nrmse(task.normalizer.denormalize(decoded), flat_points(u)).mean()))
    one_step, rollout = metrics["one_step_nrmse"], metrics["nrmse"]
    assert one_step < np.mean(persistence_one)
    assert one_step <= 1.5 * np.mean(reconstruction)
    assert rollout * 3 <= np.mean(persistence_rollout)

    with open(next((run / "logs" / "operator").rglob("metrics.csv")), newline="") as handle:
        validations = [float(row["val/nrmse"]) for row in csv.DictReader(handle) if row.get("val/nrmse")]
    status = json.loads((run / "stage_status.json").read_text())["operator"]
    assert len(validations) >= 2 and status["best_score"] < validations[0]
