"""A resume with EMA and ``nan_policy=skip_batch`` on: the EMA weights and the count of skipped
batches come back exactly, so the resumed run ends where an uninterrupted one ends."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from toy_stage import FaultyStage, toy_config  # noqa: E402
from ups.checkpoint import load_checkpoint  # noqa: E402
from ups.config import with_keys  # noqa: E402
from ups.engines import fit_stage  # noqa: E402
from ups.runs import RunDir  # noqa: E402

NAN_LOSS = (1, 12)  # training-loss calls (from 0; 5 batches an epoch) whose loss is NaN


class Interrupted(RuntimeError):
    """Stands for the process dying (tests/integration/test_kills.py kills for real)."""


class CrashingStage(FaultyStage):
    def __init__(self, cfg, nan_loss, crash_at=None):
        super().__init__(cfg, nan_loss=nan_loss)
        self.crash_at = crash_at

    def training_loss(self, batch):
        if self.calls == self.crash_at:
            raise Interrupted(f"interrupted at batch call {self.calls}")
        return super().training_loss(batch)


@pytest.mark.parametrize("engine", ["lightning", "native"])
def test_a_resume_restores_the_ema_weights_and_the_skipped_count(tmp_path, engine):
    cfg = with_keys(
        toy_config(ema_decay=0.9, nan_policy="skip_batch"),
        {"stages.autoencoder.epochs": 3, "checkpoint.every_n_steps": 2},
    )
    straight = fit_stage(
        CrashingStage(cfg, NAN_LOSS), cfg, RunDir(tmp_path / "straight").init(cfg), engine=engine
    )
    run = RunDir(tmp_path / "run").init(cfg)
    with pytest.raises(Interrupted):
        fit_stage(CrashingStage(cfg, NAN_LOSS, crash_at=9), cfg, run, engine=engine)
    saved = load_checkpoint(run.last_checkpoint("autoencoder"))
    progress = saved["ups"]["progress"]
    done = saved["epoch"] * progress["batches_per_epoch"] + progress["batches"]
    assert progress["skipped"] == 1 and NAN_LOSS[1] >= done  # one skip behind the checkpoint, one ahead
    ahead = [call - done for call in NAN_LOSS if call >= done]  # calls count from 0 again
    resumed = fit_stage(CrashingStage(cfg, ahead), cfg, run, engine=engine, resume=True)

    final, reference = load_checkpoint(resumed.last_path), load_checkpoint(straight.last_path)
    assert final["ups"]["progress"]["skipped"] == reference["ups"]["progress"]["skipped"] == 2
    assert resumed.global_step == straight.global_step
    assert final["ema_state_dict"].keys() == reference["ema_state_dict"].keys()
    for key, value in reference["ema_state_dict"].items():
        torch.testing.assert_close(final["ema_state_dict"][key], value, rtol=1e-6, atol=1e-9)
    for key, value in reference["state_dict"].items():
        torch.testing.assert_close(final["state_dict"][key], value, rtol=1e-6, atol=1e-9)
