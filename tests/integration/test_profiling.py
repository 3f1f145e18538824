"""``training.lightning_profile``: each mode writes its output into <run>/profile/, ``none`` adds
no profiler and no timer; the always-on monitors log the learning rate and perf/… figures."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
from lightning.pytorch.callbacks import Timer
from lightning.pytorch.profilers import PassThroughProfiler

from ups.cli import main
from ups.engines.lightning import build_trainer
from ups.resolve import load_config
from ups.runs import RunDir

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_runs import tiny_burgers_config  # noqa: E402

OUTPUTS = {
    "timer": ["autoencoder-timer.json"],
    "simple": ["fit-autoencoder.txt"],
    "advanced": ["fit-autoencoder.txt"],
    "pytorch": ["fit-autoencoder.txt", ".pt.trace.json"],
}


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("profiling")
    return tiny_burgers_config(root)


def test_none_registers_no_profiler_and_no_timer(config, tmp_path):
    trainer = build_trainer(load_config(config), RunDir(tmp_path), "autoencoder")
    assert isinstance(trainer.profiler, PassThroughProfiler)
    assert not any(isinstance(c, Timer) for c in trainer.callbacks)
    timed = build_trainer(
        load_config(config, ["training.lightning_profile=timer", "training.max_time=00:00:01:00"]),
        RunDir(tmp_path),
        "autoencoder",
    )
    (timer,) = [c for c in timed.callbacks if isinstance(c, Timer)]
    assert timer._duration == 60


def test_a_time_limit_in_seconds_past_59_is_one_lightning_takes(config, tmp_path):
    trainer = build_trainer(
        load_config(config, ["training.max_time=00:00:00:90"]), RunDir(tmp_path), "autoencoder"
    )
    (timer,) = [c for c in trainer.callbacks if isinstance(c, Timer)]
    assert timer._duration == 90


@pytest.mark.parametrize("mode", sorted(OUTPUTS))
def test_each_profile_mode_writes_its_output(config, tmp_path, mode):
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--config",
                str(config),
                "--stage",
                "autoencoder",
                "--run-dir",
                str(run),
                f"training.lightning_profile={mode}",
            ]
        )
        == 0
    )
    names = [p.name for p in (run / "profile").iterdir()]
    for expected in OUTPUTS[mode]:
        assert any(name.endswith(expected) for name in names), (expected, names)
    if mode == "timer":
        assert json.loads((run / "profile" / "autoencoder-timer.json").read_text())["train_seconds"] > 0
    if mode == "pytorch":
        trace = next(p for p in (run / "profile").iterdir() if p.name.endswith(".pt.trace.json"))
        assert "traceEvents" in json.loads(trace.read_text())


def test_the_monitors_log_learning_rate_throughput_and_flops(config, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--stage", "autoencoder", "--run-dir", str(run)]) == 0
    with open(run / "logs" / "autoencoder" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert float(next(r["lr-AdamW"] for r in rows if r["lr-AdamW"])) > 0
    epoch = next(r for r in rows if r["perf/samples_per_sec"])
    assert float(epoch["perf/samples_per_sec"]) > 0 and float(epoch["perf/flops_per_sec"]) > 0
    assert float(epoch["perf/epoch_seconds"]) > 0
