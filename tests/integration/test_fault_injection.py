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
from collections import Counter
from pathlib import Path

import pytest

from ups.checkpoint import load_checkpoint
from ups.engines.progress import inside_epoch

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
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


def states(run: Path) -> dict[str, str]:
    return {
        name: entry["state"] for name, entry in json.loads((run / "stage_status.json").read_text()).items()
    }


def batches(log: Path) -> Counter:
    return Counter(log.read_text().split()) if log.exists() else Counter()


def batches_done(checkpoint: dict) -> int:
    """Training batches behind a checkpoint (one optimizer step per batch in this config)."""
    progress = checkpoint["ups"]["progress"]
    epochs = checkpoint["epoch"] + (0 if inside_epoch(progress) else 1)
    return epochs * progress["batches_per_epoch"] + (progress["batches"] if inside_epoch(progress) else 0)


def checkpoint_files(run: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in (run / "checkpoints").rglob("*.ckpt")}


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
    resumed_from: dict[str, int] = {}  # batches behind the checkpoint each killed stage resumes from
    kept: dict[Path, bytes] = {}
    for attempt, (point, dying, done, before_first_checkpoint) in enumerate(kills):
        log = tmp_path / f"attempt{attempt}.log"
        proc = run_pipeline(config, run, log, point, *(["--resume"] if attempt else []))
        assert proc.returncode == -9, proc.stderr[-3000:]  # SIGKILL
        # stage_status.json tells the truth: done, running (where it died) and pending stages
        expected = {
            name: "done" if name in done else "running" if name == dying else "pending" for name in STAGES
        }
        assert states(run) == expected
        # every checkpoint on disk is whole; the stages done earlier were not touched again
        files = checkpoint_files(run)
        for path in files:
            load_checkpoint(path)
        assert {p: files[p] for p in kept} == kept
        kept = {p: b for p, b in files.items() if p.parent.name in done}
        # a resumed stage trained only what its checkpoint did not hold
        for name, count in batches(log).items():
            if name in resumed_from:
                assert count == expected_batches[name] - resumed_from.pop(name) or name == dying
        if dying is not None:
            last = run / "checkpoints" / dying / "last.ckpt"
            assert last.exists() != before_first_checkpoint
            resumed_from[dying] = batches_done(load_checkpoint(last)) if last.exists() else 0
            assert 0 <= resumed_from[dying] < expected_batches[dying]
        if point.startswith("checkpoint-write"):  # the half-written file is the temporary one
            assert list((run / "checkpoints" / dying).glob(".last.ckpt.*.tmp"))

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
