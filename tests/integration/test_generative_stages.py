"""diff_residual, consistency_distill and steady_prior: one short epoch on both engines, same
numbers, their validation figures, and upstream checks before training."""

from __future__ import annotations

import csv
import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch

from ups.checkpoint import CheckpointError, load_checkpoint, stage_weights
from ups.cli import main
from ups.config import to_yaml
from ups.errors import UPSError
from ups.eval.run import build_evaluator
from ups.pipeline.runner import build_stage, train_stage
from ups.resolve import load_config
from ups.runs import RunDir

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_runs import BURGERS_AND_DARCY, generative_overrides, tiny_data, write_config  # noqa: E402

TASKS = BURGERS_AND_DARCY
GENERATIVE = generative_overrides(steps_infer=4, val_samples=3)
VAL_KEYS = {
    "diff_residual": {
        "val/nrmse",
        "val/operator_nrmse",
        "val/ensemble_nrmse",
        "val/crps",
        "val/spread_skill",
        "val/rollout_nrmse",
        "val/operator_rollout_nrmse",
        "val/burgers/crps",
    },
    "consistency_distill": {"val/nrmse", "val/teacher_nrmse", "val/operator_nrmse", "val/speedup"},
    "steady_prior": {"val/nrmse", "val/regression_nrmse", "val/reconstruction_nrmse", "val/darcy/nrmse"},
}


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    """(config, run folder with autoencoder, operator and diff_residual trained by Lightning)."""
    root = tmp_path_factory.mktemp("generative")
    config = write_config(root / "tiny.yaml", tiny_data(root, darcy=True), TASKS)
    cfg = load_config(config, GENERATIVE)
    for stage in ("autoencoder", "operator", "diff_residual"):
        train_stage(cfg, stage, root / "run", engine="lightning")
    return cfg, root / "run"


@pytest.mark.parametrize("stage", ["diff_residual", "consistency_distill", "steady_prior"])
def test_stage_trains_an_epoch_on_both_engines_with_the_same_numbers(upstream, tmp_path, stage):
    cfg, run = upstream
    results = {
        engine: train_stage(cfg, stage, tmp_path / engine, engine=engine, from_run=run).result
        for engine in ("lightning", "native")
    }
    lit, nat = results["lightning"], results["native"]
    assert len(lit.train_losses) == len(nat.train_losses) > 0
    assert nat.train_losses == pytest.approx(lit.train_losses, rel=1e-5)
    last = lit.val_history[-1]
    assert VAL_KEYS[stage] <= last.keys()
    for key in VAL_KEYS[stage] - {"val/speedup"}:  # a wall-clock ratio differs run to run
        assert nat.val_history[-1][key] == pytest.approx(last[key], rel=1e-5), key
    assert load_checkpoint(lit.best_path)["ups"]["stage"] == stage


def test_the_student_starts_from_the_corrector_and_keeps_it_frozen(upstream):
    cfg, run = upstream
    stage = build_stage(cfg, "consistency_distill", RunDir(run))
    corrector = stage_weights(load_checkpoint(RunDir(run).best_checkpoint("diff_residual")))
    student = stage.model.student.state_dict()
    assert all(torch.equal(student[k], corrector[f"flow.{k}"]) for k in student)
    assert float(stage.model.residual_scale) == float(corrector["residual_scale"]) > 0
    assert {n.split(".")[0] for n, p in stage.model.named_parameters() if p.requires_grad} == {"student"}


def test_a_stage_without_its_upstream_checkpoint_fails_before_training(upstream, tmp_path):
    cfg, _ = upstream
    with pytest.raises(UPSError, match="no checkpoint of stage 'diff_residual'"):
        train_stage(cfg, "consistency_distill", tmp_path / "empty", engine="native")
    assert not (tmp_path / "empty" / "checkpoints").exists()


def test_a_mismatched_upstream_checkpoint_fails_before_training(upstream, tmp_path):
    cfg, run = upstream
    wider = dataclasses.replace(cfg.stages.diff_residual, hidden=32)  # a wider corrector
    other = dataclasses.replace(cfg, stages=dataclasses.replace(cfg.stages, diff_residual=wider))
    with pytest.raises(CheckpointError, match="diff_residual checkpoint does not fit"):
        train_stage(other, "consistency_distill", tmp_path / "x", engine="native", from_run=run)
    assert not (tmp_path / "x").exists()


def test_the_pipeline_runs_all_five_stages_in_order_with_handoff(upstream, tmp_path, capsys):
    cfg, _ = upstream
    config = tmp_path / "all.yaml"
    config.write_text(to_yaml(cfg))
    run = tmp_path / "run"
    assert main(["pipeline", "--config", str(config), "--run-dir", str(run)]) == 0
    table = capsys.readouterr().out
    status = json.loads((run / "stage_status.json").read_text())
    order = ["autoencoder", "operator", "diff_residual", "consistency_distill", "steady_prior"]
    assert [status[s]["state"] for s in order] == ["done"] * 5
    started = [status[s]["running_at"] for s in order]
    assert started == sorted(started)
    assert all(s in table for s in order) and "teacher_nrmse" in table and "regression_nrmse" in table
    # handoff: each stage's frozen part is the best checkpoint of the stage before it
    student = stage_weights(load_checkpoint(run / status["consistency_distill"]["best_path"]))
    corrector = stage_weights(load_checkpoint(run / status["diff_residual"]["best_path"]))
    assert all(torch.equal(student[k], v) for k, v in corrector.items())
    assert {k.split(".")[0] for k in set(student) - set(corrector)} == {"student"}  # its own part
    operator = stage_weights(load_checkpoint(run / status["operator"]["best_path"]))
    assert all(torch.equal(corrector[k], v) for k, v in operator.items())
    # one step axis: each stage's logged steps start after the previous stage's
    offsets = [status[s]["step_offset"] for s in order]
    assert offsets == [sum(status[p]["global_step"] for p in order[:i]) for i in range(5)]
    for stage, offset in zip(order, offsets):
        steps = [int(r["step"]) for r in csv.DictReader(open(run / "logs" / stage / "metrics.csv"))]
        assert min(steps) >= offset


def test_the_steady_prior_samples_around_its_regression(upstream, tmp_path):
    cfg, run = upstream
    trained = train_stage(cfg, "steady_prior", tmp_path / "run", engine="native", from_run=run).result
    stored = float(stage_weights(load_checkpoint(trained.best_path))["residual_scale"])
    stage = build_stage(cfg, "steady_prior", RunDir(run))
    pairs = stage.train_dataset()
    batch = stage.collate([pairs[i] for i in range(len(pairs))])
    z_a, z_u = stage.encode(batch)
    spread = float((z_u - z_u.mean(dim=0)).pow(2).mean().sqrt())
    stage.prepare(torch.device("cpu"))
    # the scale is the spread of the train solutions' latents, measured before training and saved
    assert float(stage.model.residual_scale) == pytest.approx(spread, rel=1e-5)
    assert stored == pytest.approx(spread, rel=1e-5)
    # the flow models what the regression misses: its loss sends no gradient into the regression
    stage.training_loss(batch)["flow"].backward()
    assert all(p.grad is None or not p.grad.any() for p in stage.model.regression.parameters())
    assert any(p.grad is not None and p.grad.any() for p in stage.model.flow.parameters())
    # a sample is the regression plus the scaled residual flow: with a zero velocity, guess + sigma * noise
    torch.nn.init.zeros_(stage.model.flow.proj_out.weight)
    torch.nn.init.zeros_(stage.model.flow.proj_out.bias)
    with torch.no_grad():
        guess, noise = stage.regress(batch, z_a), torch.randn_like(z_a)
        sampled = stage.sample(batch, z_a, guess, noise)
    assert torch.allclose(sampled, guess + spread * noise, atol=1e-5)


def test_the_steady_prior_trains_on_pairs_transposed_at_random(upstream):
    from ups.stages.batch import transpose_half

    cfg, run = upstream
    stage = build_stage(cfg, "steady_prior", RunDir(run))
    assert stage.transposed_names == {
        "darcy"
    }  # the built-in Darcy on a 16 x 16 grid: symmetric under x <-> y
    pairs = stage.train_dataset()
    batch = stage.collate([pairs[i] for i in range(len(pairs))])
    state = stage.generator.get_state()
    loss = stage.training_loss(batch)["loss"]
    # the same loss from the pairs transposed by hand with the same draw, the stage's own transposes off
    stage.generator.set_state(state)
    a, u = transpose_half([batch["input"], batch["target"]], stage.generator)
    assert not torch.equal(u, batch["target"]) and torch.equal(
        a[0], batch["input"][0].transpose(0, 1)
    ) == torch.equal(u[0], batch["target"][0].transpose(0, 1))
    stage.transposed_names = set()
    assert torch.equal(stage.training_loss({**batch, "input": a, "target": u})["loss"], loss)


def test_a_corrector_trained_on_another_operator_is_refused_at_evaluation(upstream, tmp_path):
    """The corrector's checkpoint holds the operator it was trained on; evaluated beside an operator
    checkpoint that differs, it would be scored on dynamics it never saw."""
    cfg, run = upstream
    paths = {stage: RunDir(run).best_checkpoint(stage) for stage in ("operator", "diff_residual")}
    assert build_evaluator(cfg, paths).dynamics.corrected  # the run's own pair evaluates
    checkpoint = load_checkpoint(paths["operator"])
    key = next(k for k in checkpoint["state_dict"] if ".operator." in k and k.endswith("weight"))
    checkpoint["state_dict"][key] = checkpoint["state_dict"][key] + 1e-3
    paths["operator"] = tmp_path / "other-operator.ckpt"
    torch.save(checkpoint, paths["operator"])
    with pytest.raises(UPSError, match="trained on another operator than the operator checkpoint"):
        build_evaluator(cfg, paths)
