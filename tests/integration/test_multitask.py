"""Several PDE families in one model: per-task metrics, both engines, DDP sharding on CPU."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ups.checkpoint import load_checkpoint, load_into
from ups.cli import main
from ups.data.generate import generate_dataset
from ups.engines.loaders import build_loaders
from ups.engines.meters import MetricMeans
from ups.pipeline.runner import build_stage, train_stage
from ups.resolve import load_config
from ups.runs import RunDir

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_runs import write_config  # noqa: E402

TASKS = [  # three families on three grid sizes
    {"name": "burgers", "path": "1D_Burgers_Sols_Nu0.01.hdf5"},
    {"name": "advection", "path": "1D_Advection_Sols_beta0.4.hdf5"},
    {"name": "reacdiff", "path": "ReacDiff_Nu0.5_Rho1.0.hdf5"},
]


@pytest.fixture(scope="module")
def multitask(tmp_path_factory):
    """(config path, run folder with a trained autoencoder)."""
    root = tmp_path_factory.mktemp("multitask")
    for generator, n, nx in (("burgers1d", 8, 32), ("advection1d", 8, 24), ("reaction_diffusion1d", 12, 40)):
        generate_dataset(generator, root / "data", n=n, nx=nx, nt=11, seed=0, progress=False)
    config = write_config(
        root / "multitask.yaml",
        root / "data",
        TASKS,
        training={"batch_size": 4, "latent_cache_dir": str(root / "cache")},
    )
    run = root / "run"
    assert main(["train", "--config", str(config), "--stage", "autoencoder", "--run-dir", str(run)]) == 0
    return config, run


def metric_columns(run: Path, stage: str) -> set[str]:
    rows = list(csv.DictReader(open(run / "logs" / stage / "metrics.csv")))
    return {key for row in rows for key, value in row.items() if value not in ("", None)}


def test_one_autoencoder_for_three_families_reports_each(multitask):
    _, run = multitask
    columns = metric_columns(run, "autoencoder")
    for task in ("burgers", "advection", "reacdiff"):
        assert {f"val/{task}/nrmse", f"train/{task}/nrmse"} <= columns
    assert {"val/nrmse", "train/nrmse", "train/loss"} <= columns


@pytest.mark.parametrize("sampling", ["proportional", "uniform"])
def test_multitask_operator_engines_agree_with_per_task_metrics(multitask, tmp_path, sampling):
    config, ae_run = multitask
    cfg = load_config(config, [f"data.task_sampling={sampling}"])
    results = {
        engine: train_stage(cfg, "operator", tmp_path / engine, engine=engine, from_run=ae_run).result
        for engine in ("lightning", "native")
    }
    lit, nat = results["lightning"], results["native"]
    assert nat.train_losses == pytest.approx(lit.train_losses, rel=1e-6)
    last = lit.val_history[-1]
    for task in ("burgers", "advection", "reacdiff"):
        assert nat.val_history[-1][f"val/{task}/nrmse"] == pytest.approx(last[f"val/{task}/nrmse"], rel=1e-6)
        assert {f"train/{task}/nrmse", f"val/{task}/rollout_nrmse"} <= metric_columns(
            tmp_path / "lightning", "operator"
        )
    # train windows 4 x 7, 4 x 7 and 6 x 7 (trajectories x start frames), batches of 4: proportional
    # 7 + 7 + 11 batches; uniform draws 42 from each task: 3 x 11
    per_epoch = {"proportional": 7 + 7 + 11, "uniform": 3 * 11}[sampling]
    assert len(lit.train_losses) == 2 * per_epoch
    ckpt = load_checkpoint(lit.last_path)
    assert ckpt["ups"]["metadata"]["tasks"] == ["burgers", "advection", "reacdiff"]


def test_ddp_on_cpu_shards_disjoint_equal_and_complete(multitask, tmp_path):
    """Two gloo ranks: per epoch disjoint samples covering the train split, equal batch counts,
    per-task validation metrics reduced over both ranks in the logs."""
    config, ae_run = multitask
    run = tmp_path / "run"
    overrides = ["training.devices=2", "training.strategy=ddp", "training.batch_size=5"]
    script = Path(__file__).with_name("ddp_operator.py")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [sys.executable, str(script), str(config), str(ae_run), str(run), str(tmp_path), *overrides],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    cfg = load_config(config, overrides)
    train = build_stage(cfg, "operator", RunDir(ae_run)).train_dataset()
    everything = {
        (train.tasks[k].name, traj, t0)
        for j, (k, traj) in enumerate(train.entries)
        for t0 in range(train.per_trajectory[j])
    }
    assert ranks[0].keys() == ranks[1].keys() == {"0", "1"}
    for epoch in ("0", "1"):
        mine, theirs = ([tuple(s) for batch in r[epoch] for s in batch] for r in ranks)
        assert len(ranks[0][epoch]) == len(ranks[1][epoch])
        assert len(set(mine)) == len(mine) and not set(mine) & set(theirs)
        assert set(mine) | set(theirs) == everything
        assert all(len({s[0] for s in batch}) == 1 for r in ranks for batch in r[epoch])  # one task per batch
    assert ranks[0]["0"] != ranks[0]["1"]  # reshuffled per epoch
    columns = metric_columns(run, "operator")
    for task in ("burgers", "advection", "reacdiff"):
        assert {f"val/{task}/nrmse", f"train/{task}/nrmse"} <= columns
    # the logged validation means are over both ranks' shards: one process over the whole split agrees
    logged = [
        row for row in csv.DictReader(open(run / "logs" / "operator" / "metrics.csv")) if row["val/nrmse"]
    ][-1]
    stage = build_stage(cfg, "operator", RunDir(ae_run))
    load_into(stage, load_checkpoint(run / "checkpoints" / "operator" / "last.ckpt"))
    stage.prepare(torch.device("cpu"))
    stage.set_train_mode(False)
    _, val_loader = build_loaders(stage, cfg, validate=True)
    means = MetricMeans()
    with torch.no_grad():
        for batch in val_loader:
            means.add(stage.validation_metrics(batch))
    for key, value in means.means("val").items():
        assert float(logged[key]) == pytest.approx(value, rel=1e-5), key


def test_tasks_with_different_channel_counts_train_together_on_both_engines(tmp_path, pdebench_writers):
    """A 1-channel and a 2-channel 1D task: one encoder/decoder with a stem and a head each."""
    pdebench_writers.single(tmp_path / "1D_Burgers_Sols_Nu0.01.hdf5", shape=(8, 9, 16), seed=0)
    pdebench_writers.multigroup(tmp_path / "1D_two_channel.h5", n=8, shape=(9, 24, 2), seed=1)
    config = write_config(
        tmp_path / "mixed.yaml",
        tmp_path,
        [
            {"name": "scalar", "path": "1D_Burgers_Sols_Nu0.01.hdf5"},
            {"name": "pair", "path": "1D_two_channel.h5"},
        ],
        training={"batch_size": 4},
    )
    cfg = load_config(config)
    results = {
        engine: train_stage(cfg, "autoencoder", tmp_path / engine, engine=engine).result
        for engine in ("lightning", "native")
    }
    assert results["native"].train_losses == pytest.approx(results["lightning"].train_losses, rel=1e-6)
    weights = load_checkpoint(results["lightning"].last_path)["state_dict"]
    assert weights["model.encoder.by_rank.d1.stems.c1.weight"].shape == (16, 1 + 1)
    assert weights["model.encoder.by_rank.d1.stems.c2.weight"].shape == (16, 2 + 1)
    assert weights["model.decoder.by_rank.d1.heads.c2.1.weight"].shape == (2, 16)
    last = results["lightning"].val_history[-1]
    assert last["val/scalar/nrmse"] > 0 and last["val/pair/nrmse"] > 0
    operator = train_stage(cfg, "operator", tmp_path / "lightning", engine="lightning").result
    assert {"val/scalar/nrmse", "val/pair/nrmse"} <= operator.val_history[-1].keys()


def test_loader_knobs_do_not_change_the_numbers(multitask, tmp_path):
    """Worker processes, prefetching and persistent workers in both engines: same batches, same losses."""
    config, ae_run = multitask
    knobs = ["training.num_workers=2", "training.prefetch_factor=3", "training.persistent_workers=true"]
    plain = train_stage(
        load_config(config), "operator", tmp_path / "plain", engine="native", from_run=ae_run
    ).result
    for engine in ("lightning", "native"):
        result = train_stage(
            load_config(config, knobs), "operator", tmp_path / engine, engine=engine, from_run=ae_run
        ).result
        assert result.train_losses == pytest.approx(plain.train_losses, rel=1e-6)


def test_the_corrector_trains_on_tasks_of_three_grid_sizes_without_a_cache(multitask, tmp_path):
    """diff_residual measures its residual scale and trains one task per batch, also when the
    tasks' fields cannot be stacked together (grids of 32, 24 and 40 points, encoded on the fly)."""
    config, ae_run = multitask
    cfg = load_config(
        config,
        [
            "training.latent_cache_dir=null",
            "stages.diff_residual.epochs=1",
            "stages.diff_residual.hidden=16",
            "stages.diff_residual.depth=1",
            "stages.diff_residual.steps_infer=2",
            "stages.diff_residual.val_samples=2",
        ],
    )
    train_stage(cfg, "operator", tmp_path / "run", engine="native", from_run=ae_run)
    result = train_stage(cfg, "diff_residual", tmp_path / "run", engine="native").result
    scale = float(load_checkpoint(result.last_path)["state_dict"]["model.residual_scale"])
    assert (
        scale > 0
        and {"val/burgers/crps", "val/advection/crps", "val/reacdiff/crps"} <= result.val_history[-1].keys()
    )
