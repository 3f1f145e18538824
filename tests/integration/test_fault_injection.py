"""Kill the five-stage pipeline with SIGKILL at several points, resume each time, and end where an
uninterrupted run with the same seed ends (slow: about two minutes).

The points: inside a stage before its first checkpoint, inside a stage after checkpoints written
inside an epoch (``checkpoint.every_n_steps``), in the middle of a checkpoint write, and between
two stages. ``tests/fault_injection.py`` makes the process kill itself there, so each kill lands
on the same batch every time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
from fault_injection import batches, checkpoint_files, kill_and_resume, states  # noqa: E402
from tiny_runs import generative_overrides, tiny_five_stage_config  # noqa: E402

pytestmark = pytest.mark.slow

STAGES = ("autoencoder", "operator", "diff_residual", "consistency_distill", "steady_prior")
SETTINGS = [
    "training.batch_size=4",
    "checkpoint.every_n_steps=2",
    "stages.autoencoder.epochs=2",
    "stages.operator.epochs=3",
    "stages.diff_residual.epochs=2",
    "stages.consistency_distill.epochs=2",
    "stages.steady_prior.epochs=2",
]
TOLERANCE = 0.05  # the bound on the final val/nrmse of each stage, relative


def run_pipeline(config: Path, run: Path, log: Path, point: str, *resume: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        str(TESTS / "fault_injection.py"),
        str(log),
        point,
        "--",
        "pipeline",
        "--config",
        str(config),
        "--run-dir",
        str(run),
        *resume,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    return tiny_five_stage_config(tmp_path_factory.mktemp("faults"), generative_overrides(2, 4) + SETTINGS)


def test_a_pipeline_killed_four_times_ends_where_an_uninterrupted_one_ends(config, tmp_path):
    reference_log, reference = tmp_path / "reference.log", tmp_path / "reference"
    assert run_pipeline(config, reference, reference_log, "none").returncode == 0
    expected_batches = batches(reference_log)

    run = tmp_path / "killed"
    # (where it dies, the stage it dies in, the stages done before, whether it dies before the stage's
    #  first checkpoint); each line resumes the run the line before killed
    kills = [
        ("batch:autoencoder:2", "autoencoder", (), True),
        ("batch:operator:12", "operator", ("autoencoder",), False),
        ("checkpoint-write:diff_residual:3", "diff_residual", ("autoencoder", "operator"), False),
        ("after-done:diff_residual", None, ("autoencoder", "operator", "diff_residual"), False),
    ]

    def launch(log: Path, point: str, resume: bool) -> int:
        return run_pipeline(config, run, log, point, *(["--resume"] if resume else [])).returncode

    kept, resumed_from = kill_and_resume(launch, run, STAGES, kills, expected_batches, tmp_path)
    assert not resumed_from  # each killed stage was resumed and checked
    log = tmp_path / "final.log"
    proc = run_pipeline(config, run, log, "none", "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert states(run) == {name: "done" for name in STAGES}
    trained = batches(log)
    assert all(trained[name] == 0 for name in ("autoencoder", "operator", "diff_residual"))  # not redone
    assert trained["consistency_distill"] == expected_batches["consistency_distill"]
    assert trained["steady_prior"] == expected_batches["steady_prior"]
    assert not list(run.rglob("*.tmp"))
    assert {p: b for p, b in checkpoint_files(run).items() if p in kept} == kept

    ours, theirs = (json.loads((r / "stage_status.json").read_text()) for r in (run, reference))
    gaps = {
        name: abs(ours[name]["best_score"] - theirs[name]["best_score"]) / theirs[name]["best_score"]
        for name in STAGES
    }
    print("final val/nrmse, relative difference to the uninterrupted run:", gaps)
    assert max(gaps.values()) <= TOLERANCE, gaps
    assert all(ours[name]["global_step"] == theirs[name]["global_step"] for name in STAGES)
