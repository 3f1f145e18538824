"""``checkpoint.every_n_steps``: checkpoints inside an epoch, and resuming from them (in the engine
that wrote them) as if the run had never stopped."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from toy_stage import ToyStage, toy_config  # noqa: E402
from ups.checkpoint import load_checkpoint  # noqa: E402
from ups.config import with_keys  # noqa: E402
from ups.engines import fit_stage  # noqa: E402
from ups.errors import UPSError  # noqa: E402
from ups.runs import RunDir  # noqa: E402

ENGINES = ("lightning", "native")


class Interrupted(RuntimeError):
    """Stands for the process dying (the SIGKILL test in tests/integration does it for real)."""


class MeteredStage(ToyStage):
    """The toy stage with a per-sample training metric (averaged over the epoch by the engines),
    which raises ``Interrupted`` on training-loss call ``crash_at`` (counted from 0)."""

    def __init__(self, cfg, crash_at: int | None = None):
        super().__init__(cfg)
        self.crash_at, self.calls = crash_at, 0

    def training_loss(self, batch):
        if self.calls == self.crash_at:
            raise Interrupted(f"interrupted at batch call {self.calls}")
        self.calls += 1
        terms = super().training_loss(batch)
        terms["nrmse"] = (self.model(batch["x"]) - batch["y"]).abs().squeeze(-1).detach()
        return terms


def config(accumulate: int = 1):
    cfg = toy_config(accumulate_grad_batches=accumulate)
    changes = {"optimizer.scheduler": "cosine", "optimizer.warmup_steps": 3, "stages.autoencoder.epochs": 3}
    return with_keys(cfg, {**changes, "checkpoint.every_n_steps": 2})


def last(run: RunDir) -> dict:
    return load_checkpoint(run.checkpoint_dir("autoencoder") / "last.ckpt")


def metrics_rows(run: RunDir) -> list[str]:
    return (run.log_dir("autoencoder") / "metrics.csv").read_text().splitlines()


def interrupted(tmp_path, cfg, engine: str, crash_at: int) -> RunDir:
    run = RunDir(tmp_path / engine).init(cfg)
    with pytest.raises(Interrupted):
        fit_stage(MeteredStage(cfg, crash_at=crash_at), cfg, run, engine=engine)
    return run


@pytest.mark.parametrize("accumulate", [1, 2], ids=["step-per-batch", "accumulate-2"])
@pytest.mark.parametrize("engine", ENGINES)
def test_a_resume_from_inside_an_epoch_continues_as_if_uninterrupted(tmp_path, engine, accumulate):
    cfg = config(accumulate)
    straight = fit_stage(MeteredStage(cfg), cfg, RunDir(tmp_path / "straight").init(cfg), engine=engine)
    # 5 batches per epoch: the crash falls on epoch 1's 4th batch, after the checkpoint of step 8
    # (one step per batch: epoch 1 steps 6 to 10, and writes after its 1st and 3rd batches) or of
    # step 4 (two batches per step: epoch 1 steps 4, 5, 6, and writes after its 2nd batch)
    run = interrupted(tmp_path, cfg, engine, crash_at=8)
    saved = last(run)
    resumed = fit_stage(MeteredStage(cfg), cfg, run, engine=engine, resume=True)
    progress = saved["ups"]["progress"]
    batches, step = (3, 8) if accumulate == 1 else (2, 4)
    assert (saved["epoch"], saved["global_step"], progress["batches"], progress["batches_per_epoch"]) == (
        1,
        step,
        batches,
        5,
    )
    assert progress["train_totals"]["nrmse"][1] == batches * 8  # samples of epoch 1 before the write

    done = 5 + progress["batches"]
    assert resumed.train_losses == pytest.approx(straight.train_losses[done:], rel=1e-6, abs=0)
    assert resumed.global_step == straight.global_step and resumed.epochs_run == 3
    assert [h["step"] for h in resumed.val_history] == [h["step"] for h in straight.val_history[1:]]
    for a, b in zip(resumed.val_history, straight.val_history[1:]):
        assert a == pytest.approx(b, rel=1e-6)
    final, reference = last(run), load_checkpoint(straight.last_path)
    for key, value in reference["state_dict"].items():
        torch.testing.assert_close(final["state_dict"][key], value, rtol=1e-6, atol=1e-9)

    # the epoch's training means cover all five batches, the two before the crash included
    def epoch_means(rows):
        header = rows[0].split(",")
        col, ep = header.index("train/nrmse"), header.index("epoch")
        return {row.split(",")[ep]: float(row.split(",")[col]) for row in rows[1:] if row.split(",")[col]}

    assert epoch_means(metrics_rows(run)) == pytest.approx(
        epoch_means(metrics_rows(RunDir(tmp_path / "straight"))), rel=1e-6
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_step_checkpoints_are_written_every_n_steps_but_not_at_an_epochs_end(tmp_path, engine, monkeypatch):
    import ups.engines.checkpoint_io as lightning_io
    import ups.engines.native as native_engine

    writes = []
    module = lightning_io if engine == "lightning" else native_engine
    original = module.save_checkpoint

    def recording(checkpoint, path, **kwargs):
        writes.append((Path(path).name, checkpoint["global_step"], checkpoint["ups"]["progress"]["batches"]))
        return original(checkpoint, path, **kwargs)

    monkeypatch.setattr(module, "save_checkpoint", recording)
    cfg = config()
    cfg = with_keys(cfg, {"stages.autoencoder.epochs": 2})
    fit_stage(MeteredStage(cfg), cfg, RunDir(tmp_path / engine).init(cfg), engine=engine)
    steps = [(step, batches) for name, step, batches in writes if name == "last.ckpt"]
    # steps 2 and 4 inside epoch 0, 5 at its end; 6 and 8 inside epoch 1 (batches 1 and 3), 10 at its end
    assert steps == [(2, 2), (4, 4), (5, 5), (6, 1), (8, 3), (10, 5)]


def test_both_engines_record_the_same_progress_inside_an_epoch(tmp_path):
    cfg = config(accumulate=2)
    lit, native = (last(interrupted(tmp_path, cfg, engine, crash_at=8)) for engine in ENGINES)
    assert (native["epoch"], native["global_step"], native["ups"]["progress"]) == (
        lit["epoch"],
        lit["global_step"],
        lit["ups"]["progress"],
    )


def test_a_resume_inside_an_epoch_with_another_epoch_length_is_refused(tmp_path):
    cfg = config()
    run = RunDir(tmp_path / "run").init(cfg)
    with pytest.raises(Interrupted):
        fit_stage(MeteredStage(cfg, crash_at=3), cfg, run, engine="native")
    cfg = with_keys(cfg, {"training.batch_size": 4})
    with pytest.raises(UPSError, match=r"inside epoch 0 of 5 batches per rank, but this config gives 10"):
        fit_stage(MeteredStage(cfg), cfg, run, engine="native", resume=True)
