"""``ups train --tune-batch-size / --tune-lr``: Lightning's Tuner before the fit, its results in
tuning.json and (unless --no-apply-tuning) in the run's resolved config; refusals."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib
import pytest
import yaml

from ups.cli import main

matplotlib.use("Agg")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_runs import tiny_burgers_config  # noqa: E402


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tuning")
    return tiny_burgers_config(root)


def train(config: Path, run: Path, *args: str) -> int:
    return main(["train", "--config", str(config), "--stage", "autoencoder", "--run-dir", str(run), *args])


def resolved(run: Path) -> dict:
    return yaml.safe_load((run / "config.resolved.yaml").read_text())["stages"]["autoencoder"]


class FakeFinder:
    results = {"lr": [1e-4, 1e-3, 1e-2], "loss": [1.0, 0.5, 0.9]}

    def suggestion(self):
        return 3e-3

    def plot(self, suggest):
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots()
        axis.plot(self.results["lr"], self.results["loss"])
        return figure


class FakeTuner:
    calls: list = []

    def __init__(self, trainer):
        self.trainer = trainer

    def scale_batch_size(self, module, **kwargs):
        FakeTuner.calls.append(("scale_batch_size", module.batch_size, kwargs))
        return 8

    def lr_find(self, module, **kwargs):
        FakeTuner.calls.append(("lr_find", module.batch_size, kwargs))
        return FakeFinder()


@pytest.fixture
def fake_tuner(monkeypatch):
    import lightning.pytorch.tuner

    FakeTuner.calls = []
    monkeypatch.setattr(lightning.pytorch.tuner, "Tuner", FakeTuner)
    return FakeTuner


def test_the_tuners_results_are_written_and_carried_into_the_resolved_config(config, tmp_path, fake_tuner):
    run = tmp_path / "run"
    assert (
        train(
            config,
            run,
            "--tune-batch-size",
            "--tune-batch-size-mode",
            "binsearch",
            "--max-batch-size",
            "24",
            "--tune-lr",
            "--tune-lr-steps",
            "7",
        )
        == 0
    )
    (scale, bs_at_start, kwargs), (find, bs_for_lr, lr_kwargs) = fake_tuner.calls
    assert (scale, bs_at_start, find, bs_for_lr) == ("scale_batch_size", 16, "lr_find", 8)
    assert kwargs["mode"] == "binsearch" and kwargs["max_val"] == 24 and kwargs["init_val"] == 16
    assert lr_kwargs["num_training"] == 7 and lr_kwargs["update_attr"] is False
    report = json.loads((run / "tuning.json").read_text())["autoencoder"]
    assert report["batch_size"]["found"] == 8 and report["lr"]["suggestion"] == pytest.approx(3e-3)
    assert report["overrides"] == ["stages.autoencoder.batch_size=8", "stages.autoencoder.optimizer.lr=0.003"]
    assert resolved(run)["batch_size"] == 8 and resolved(run)["optimizer"]["lr"] == pytest.approx(3e-3)
    assert (run / "tuning_lr_autoencoder.png").read_bytes()[:4] == b"\x89PNG"
    # the fit ran with the tuned batch size: 3 frames' worth of batches per epoch at 8, not 16
    assert json.loads((run / "stage_status.json").read_text())["autoencoder"]["state"] == "done"


def test_no_apply_tuning_only_reports(config, tmp_path, fake_tuner):
    run = tmp_path / "run"
    assert train(config, run, "--tune-batch-size", "--no-apply-tuning") == 0
    assert json.loads((run / "tuning.json").read_text())["autoencoder"]["applied"] is False
    assert resolved(run)["batch_size"] is None  # the config's own (training.batch_size)


def test_the_real_tuner_runs_a_few_steps(config, tmp_path):
    run = tmp_path / "run"
    assert (
        train(config, run, "--tune-batch-size", "--max-batch-size", "32", "--tune-lr", "--tune-lr-steps", "8")
        == 0
    )
    report = json.loads((run / "tuning.json").read_text())["autoencoder"]
    train_frames = report["batch_size"]["train_samples"]
    assert (
        report["batch_size"]["found"] == min(32, train_frames) == resolved(run)["batch_size"]
    )  # CPU: the cap
    assert len(report["lr"]["curve"]["lr"]) == 8 and (run / "tuning_lr_autoencoder.png").is_file()
    assert not (run / ".tuning").exists()  # the Tuner's scratch checkpoints


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tune-batch-size", "--devices", "2", "training.strategy=ddp"], "tune on one device first"),
        (["--tune-lr", "--engine", "native"], "use Lightning's Tuner"),
        (["--tune-lr", "--tune-lr-steps", "1"], "--tune-lr-steps >= 2"),
    ],
)
def test_what_the_tuner_cannot_do_is_refused_before_anything_is_written(
    config, tmp_path, capsys, args, message
):
    run = tmp_path / "run"
    assert train(config, run, *args) == 2
    assert message in capsys.readouterr().err and not run.exists()


def test_a_resume_keeps_the_tuned_values(config, tmp_path, fake_tuner):
    run = tmp_path / "run"
    assert train(config, run, "--tune-batch-size", "--tune-lr") == 0
    (run / ".tuning").mkdir()  # as a tuning killed in an earlier attempt left it
    (run / ".tuning" / ".lr_find_0123.ckpt").write_bytes(b"scratch")
    assert train(config, run, "--resume", "stages.autoencoder.epochs=2") == 0
    assert not (run / ".tuning").exists()  # removed at the end of the stage
    assert resolved(run)["batch_size"] == 8 and resolved(run)["optimizer"]["lr"] == pytest.approx(3e-3)
