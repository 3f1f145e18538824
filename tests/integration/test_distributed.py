"""Two CPU processes train the operator stage under DDP (gloo) and under fully sharded data
parallelism (FSDP2's fully_shard under Lightning's ModelParallelStrategy); each run's checkpoint
is one ordinary file that ``ups evaluate`` reads."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ups.cli import main
from ups.resolve import load_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_runs import tiny_burgers_config  # noqa: E402


@pytest.fixture(scope="module")
def autoencoder(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("distributed")
    config = tiny_burgers_config(root)
    assert (
        main(["train", "--config", str(config), "--stage", "autoencoder", "--run-dir", str(root / "ae")]) == 0
    )
    return config, root / "ae"


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_train_the_operator_and_evaluate_reads_the_checkpoint(autoencoder, tmp_path, strategy):
    config, ae = autoencoder
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ups",
            "train",
            "--config",
            str(config),
            "--stage",
            "operator",
            "--from-run",
            str(ae),
            "--devices",
            "2",
            f"training.strategy={strategy}",
            "training.batch_size=2",
            f"paths.runs_dir={tmp_path / 'runs'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        # one left in the shell: ignored by rank 0, while rank 1 takes the one rank 0 set
        env={**os.environ, "PYTHONUNBUFFERED": "1", "UPS_RUN_DIR": str(tmp_path / "from_shell")},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("run: ") == 1  # rank 0 alone reports
    (run,) = (tmp_path / "runs").iterdir()  # rank 1 trained in the folder rank 0 chose
    assert done.stderr.count("UPS_RUN_DIR=") == 1 and not (tmp_path / "from_shell").exists()
    assert not (run / ".ups.lock").exists() and "taking over the lock" not in done.stderr  # rank 0 held it
    status = json.loads((run / "stage_status.json").read_text())["operator"]
    assert status["state"] == "done" and status["epochs"] == 2
    checkpoint = torch.load(run / status["best_path"], weights_only=True)
    assert checkpoint["ups"]["stage"] == "operator"
    assert all(
        type(value) is torch.Tensor for value in checkpoint["state_dict"].values()
    )  # gathered, no shards
    encoder_key = "model.encoder.by_rank.d1.stems.c1.weight"
    assert (
        checkpoint["state_dict"][encoder_key].shape
        == torch.load(ae / "checkpoints" / "autoencoder" / "last.ckpt", weights_only=True)["state_dict"][
            encoder_key
        ].shape
    )
    assert (
        main(
            [
                "evaluate",
                "--config",
                str(config),
                "--checkpoint",
                str(run / status["best_path"]),
                "--output-prefix",
                str(tmp_path / "eval"),
                "evaluation.report=false",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "eval.json").read_text())["metrics"]["nrmse"] > 0


def test_under_a_time_limit_both_ranks_step_with_the_same_learning_rates(autoencoder, tmp_path):
    """The schedule runs over training.max_time (the step budget is far away), so its rates come
    from a clock; both ranks must use rank 0's, or the replicas would drift apart."""
    config, ae = autoencoder
    script = Path(__file__).with_name("ddp_operator.py")
    done = subprocess.run(
        [
            sys.executable,
            str(script),
            str(config),
            str(ae),
            str(tmp_path / "run"),
            str(tmp_path),
            "training.devices=2",
            "training.strategy=ddp",
            "training.batch_size=2",
            "training.max_time=00:00:00:12",
            "stages.operator.epochs=1000",
            "stages.operator.patience=1000",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rates = [json.loads((tmp_path / f"rank{r}-lr.json").read_text()) for r in (0, 1)]
    assert len(rates[0]) > 20 and rates[0] == rates[1]
    base = load_config(config).optimizer.lr
    assert rates[0][-1] < 0.5 * base  # decayed over the time limit, which 1000 epochs of steps would not do
    assert all(a >= b for a, b in zip(rates[0], rates[0][1:]))


def test_the_lr_finder_runs_under_ddp_and_both_ranks_train_with_its_rate(autoencoder, tmp_path):
    config, _ = autoencoder
    run = tmp_path / "run"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ups",
            "train",
            "--config",
            str(config),
            "--stage",
            "autoencoder",
            "--run-dir",
            str(run),
            "--devices",
            "2",
            "training.strategy=ddp",
            "training.batch_size=4",
            "--tune-lr",
            "--tune-lr-steps",
            "24",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    suggestion = json.loads((run / "tuning.json").read_text())["autoencoder"]["lr"]["suggestion"]
    assert suggestion is not None and f"stages.autoencoder.optimizer.lr={suggestion:.6g}" in done.stderr
    import yaml

    tuned = yaml.safe_load((run / "config.resolved.yaml").read_text())["stages"]["autoencoder"]["optimizer"][
        "lr"
    ]
    assert tuned == pytest.approx(suggestion, rel=1e-5)


def test_fast_to_sota_on_two_processes_trains_on_both_and_decides_on_rank_zero(autoencoder, tmp_path):
    config, _ = autoencoder
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ups",
            "fast-to-sota",
            "--config",
            str(config),
            "--run-id",
            "ddp",
            "--devices",
            "2",
            "training.strategy=ddp",
            "training.batch_size=2",
            f"paths.runs_dir={tmp_path / 'runs'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("summary: ") == 1  # rank 1 trains, then leaves the rest to rank 0
    summary = json.loads((tmp_path / "runs" / "ddp" / "summary.json").read_text())
    assert (
        summary["status"] == "done" and summary["promoted"] and summary["steps"]["train"]["status"] == "done"
    )
    assert (
        len(list(csv.DictReader(open(tmp_path / "runs" / "leaderboard.csv")))) == 4
    )  # small, full, 2 champion


def test_a_ddp_run_interrupted_inside_an_epoch_resumes_to_the_uninterrupted_weights(autoencoder, tmp_path):
    """Both ranks stop at the same batch (an exception on each: a killed rank would leave its
    peer waiting), after a checkpoint written inside the epoch; ``--resume`` on two processes
    continues on the next batch of every rank's shard."""
    from ups.checkpoint import load_checkpoint

    config, ae = autoencoder
    injector = Path(__file__).resolve().parents[1] / "fault_injection.py"

    def train(run: Path, point: str, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                sys.executable,
                str(injector),
                str(tmp_path / "batches.log"),
                point,
                "--",
                "train",
                "--config",
                str(config),
                "--stage",
                "operator",
                "--from-run",
                str(ae),
                "--run-dir",
                str(run),
                "--devices",
                "2",
                "training.batch_size=2",
                "checkpoint.every_n_steps=2",
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    straight = train(tmp_path / "straight", "none")
    assert straight.returncode == 0, straight.stderr[-3000:]
    # 28 windows in batches of 2 over 2 ranks: 7 batches per rank and epoch; the 12th batch is the
    # 5th of epoch 1, after the checkpoint of step 10 (written after epoch 1's 3rd batch)
    interrupted = train(tmp_path / "run", "raise:operator:12")
    assert interrupted.returncode != 0 and "interrupted by tests/fault_injection.py" in interrupted.stderr
    saved = load_checkpoint(tmp_path / "run" / "checkpoints" / "operator" / "last.ckpt")
    assert (saved["epoch"], saved["global_step"]) == (1, 10)
    assert {k: saved["ups"]["progress"][k] for k in ("batches", "batches_per_epoch")} == {
        "batches": 3,
        "batches_per_epoch": 7,
    }

    resumed = train(tmp_path / "run", "none", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = load_checkpoint(tmp_path / "run" / "checkpoints" / "operator" / "last.ckpt")
    reference = load_checkpoint(tmp_path / "straight" / "checkpoints" / "operator" / "last.ckpt")
    assert final["global_step"] == reference["global_step"] == 14
    for key, value in reference["state_dict"].items():
        torch.testing.assert_close(final["state_dict"][key], value, rtol=1e-5, atol=1e-7)
