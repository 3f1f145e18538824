"""SIGKILLs in the default test run, small: a two-stage pipeline killed at four points, a killed
``ups train --resume`` and a killed ``ups fast-to-sota``, each resumed to the end an uninterrupted
run reaches. Each run is forked from a server that did the imports once (``run_forked``), so a
run costs its training only; the five-stage, four-point version is the slow
``test_fault_injection.py``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from ups.checkpoint import load_checkpoint

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
from fault_injection import (  # noqa: E402
    batches,
    batches_done,
    checkpoint_files,
    kill_and_resume,
    run_forked,
    states,
)
from tiny_runs import tiny_five_stage_config  # noqa: E402

TRAINED = ("autoencoder", "operator")
SETTINGS = [
    "training.batch_size=8",
    "checkpoint.every_n_steps=2",
    "stages.autoencoder.epochs=1",
    "stages.operator.epochs=2",
    "stages.diff_residual.epochs=0",
    "stages.consistency_distill.epochs=0",
    "stages.steady_prior.epochs=0",
]


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    return tiny_five_stage_config(tmp_path_factory.mktemp("kills"), SETTINGS)


def ups(tmp_path: Path, log: Path, point: str, *command: str) -> int:
    return run_forked(log, point, list(command), tmp_path / "output.txt")


def pipeline(config: Path, tmp_path: Path, run: Path, log: Path, point: str, *extra: str) -> int:
    return ups(tmp_path, log, point, "pipeline", "--config", str(config), "--run-dir", str(run), *extra)


def test_a_two_stage_pipeline_killed_at_four_points_ends_where_an_uninterrupted_one_ends(config, tmp_path):
    reference = tmp_path / "reference"
    assert pipeline(config, tmp_path, reference, tmp_path / "reference.log", "none") == 0
    expected = batches(tmp_path / "reference.log")

    run = tmp_path / "killed"
    kills = [  # (where it dies, the stage it dies in, the stages done before, before its first checkpoint)
        ("batch:autoencoder:2", "autoencoder", (), True),
        ("after-done:autoencoder", None, ("autoencoder",), False),
        ("batch:operator:6", "operator", ("autoencoder",), False),  # 4 batches an epoch
        ("checkpoint-write:operator:1", "operator", ("autoencoder",), False),
    ]

    def launch(log: Path, point: str, resume: bool) -> int:
        return pipeline(config, tmp_path, run, log, point, *(["--resume"] if resume else []))

    kept, resumed_from = kill_and_resume(launch, run, TRAINED, kills, expected, tmp_path)
    assert resumed_from == {"operator": 4}  # the end of epoch 0 (the write of step 6 was killed)
    assert pipeline(config, tmp_path, run, tmp_path / "final.log", "none", "--resume") == 0
    assert {name: states(run)[name] for name in TRAINED} == {name: "done" for name in TRAINED}
    assert batches(tmp_path / "final.log") == {"operator": expected["operator"] - 4}
    assert not list(run.rglob("*.tmp"))
    assert {p: b for p, b in checkpoint_files(run).items() if p in kept} == kept
    ours, theirs = (json.loads((r / "stage_status.json").read_text()) for r in (run, reference))
    for name in TRAINED:
        assert ours[name]["global_step"] == theirs[name]["global_step"]
        assert ours[name]["best_score"] == pytest.approx(theirs[name]["best_score"], rel=0.05)


def test_a_killed_train_resume_is_resumed_again_and_finishes_with_every_step(config, tmp_path):
    run = tmp_path / "run"

    def train(log: Path, point: str, *extra: str) -> int:
        command = ["train", "--config", str(config), "--stage", "autoencoder", "--run-dir", str(run)]
        return ups(tmp_path, log, point, *command, *extra)

    assert train(tmp_path / "first.log", "batch:autoencoder:6") == -9
    first = batches_done(load_checkpoint(run / "checkpoints" / "autoencoder" / "last.ckpt"))
    assert train(tmp_path / "second.log", "batch:autoencoder:3", "--resume") == -9  # the resuming process
    second = batches_done(load_checkpoint(run / "checkpoints" / "autoencoder" / "last.ckpt"))
    assert first == 4 and second == first + 2  # the resume had written a checkpoint of its own
    assert train(tmp_path / "third.log", "none", "--resume") == 0
    status = json.loads((run / "stage_status.json").read_text())["autoencoder"]
    steps = status["global_step"]
    assert status["state"] == "done" and steps == 8  # 1 epoch of 8 batches, as uninterrupted
    assert batches(tmp_path / "third.log")["autoencoder"] == steps - second


def test_a_killed_fast_to_sota_run_again_on_its_run_id_finishes(config, tmp_path):
    runs = tmp_path / "runs"

    def fast(log: Path, point: str) -> int:
        command = ["fast-to-sota", "--config", str(config), "--run-id", "x", f"paths.runs_dir={runs}"]
        return ups(tmp_path, log, point, *command)

    assert fast(tmp_path / "killed.log", "batch:operator:6") == -9
    assert states(runs / "x")["operator"] == "running"
    assert fast(tmp_path / "again.log", "none") == 0
    summary = json.loads((runs / "x" / "summary.json").read_text())
    assert summary["status"] == "done" and summary["steps"]["promote"]["status"] == "done"
    assert states(runs / "x")["operator"] == "done"
    assert batches(tmp_path / "again.log") == {"operator": 8 - 4}  # from its checkpoint, not afresh
