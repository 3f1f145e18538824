"""benchmarks/operator_trial.py: a fresh operator on a benchmark run's autoencoder, the run left as it was."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch
from tests.tiny_runs import tiny_burgers_config

from ups.cli import main as ups

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from operator_trial import trial  # noqa: E402
from rollout_anatomy import anatomy  # noqa: E402


def weights(path: Path, prefix: str) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    return {k.split(prefix, 1)[1]: v for k, v in state.items() if prefix in k}


def test_a_trial_trains_only_the_operator_on_the_runs_autoencoder(tmp_path):
    out = tmp_path / "bench"  # the layout accuracy.py writes: configs/<task>-tuned.yaml, runs/<task>-tuned
    (out / "configs").mkdir(parents=True)
    config = shutil.copy(tiny_burgers_config(tmp_path), out / "configs" / "burgers-tuned.yaml")
    base = out / "runs" / "burgers-tuned"
    assert ups(["train", "--config", str(config), "--stage", "autoencoder", "--run-dir", str(base)]) == 0
    before = sorted(p.name for p in base.rglob("*"))

    found = trial(out, "burgers", "first", 60, ["stages.operator.epochs=1"], horizon=3)
    run = out / "trials" / "burgers" / "first"
    assert found["run"] == run and (run / "checkpoints" / "operator" / "last.ckpt").is_file()
    assert len(found["rollout"]) == len(found["floor"]) == 3
    cache = f"training.latent_cache_dir={out / 'latent_cache' / 'burgers'}"
    again = anatomy(config, run, "val", 3, [cache])  # the trial scores the validation split by default
    assert found["rollout"] == pytest.approx(again["rollout"], rel=1e-6)
    assert sorted(p.name for p in base.rglob("*")) == before  # the benchmark's run is untouched
    autoencoder = weights(next((base / "checkpoints" / "autoencoder").glob("best-*.ckpt")), "encoder.")
    trained = weights(run / "checkpoints" / "operator" / "last.ckpt", "encoder.")
    assert autoencoder.keys() == trained.keys() and all(
        torch.equal(autoencoder[k], trained[k]) for k in trained
    )

    (run / "stale").write_text("from the trial of this name before")
    trial(out, "burgers", "first", 60, ["stages.operator.epochs=1"], horizon=3)
    assert not (run / "stale").exists()
