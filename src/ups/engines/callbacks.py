"""The Lightning engine's own callbacks: ``StepCheckpoint`` (``checkpoint.every_n_steps``),
``DeadlineStop`` (``training.time_budget``), the measuring ones and ``training.lightning_profile``.

Always (no per-step cost beyond counting): ``LatestLearningRate`` (Lightning's
``LearningRateMonitor``: ``lr-<optimizer>`` at the logged steps) and ``PerfMonitor`` (per epoch:
``perf/epoch_seconds``, ``perf/samples_per_sec`` and, where PyTorch's FLOP counter sees the stage's
operations, ``perf/flops_per_sec`` from the FLOPs of the epoch's first training step).

``training.lightning_profile``:
- ``none``: no profiler and no timer;
- ``timer``: Lightning's ``Timer`` (stopping at ``training.max_time`` when set) and its elapsed
  train time in ``profile/<stage>-timer.json``;
- ``simple`` / ``advanced``: Lightning's profiler of that name, its report in
  ``profile/fit-<stage>.txt``;
- ``pytorch``: PyTorch's profiler, a Chrome trace (``profile/<stage>*.pt.trace.json``, open it in
  chrome://tracing or Perfetto) and a summary table.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import LearningRateMonitor, Timer

from ups import deadline
from ups.atomic import atomic_write_text
from ups.config import Config, max_time_seconds
from ups.deadline import StageOutOfTime, StopRule
from ups.engines.progress import step_checkpoint_due
from ups.runs import RunDir
from ups.stages.optim import BudgetSchedule


class StepCheckpoint(pl.Callback):
    """``checkpoint.every_n_steps``: ``last.ckpt`` inside an epoch, by the native loop's rule
    (``step_checkpoint_due``), written on every rank's call as ModelCheckpoint writes."""

    def __init__(self, cfg: Config, path: Path):
        self.cfg, self.path = cfg, path
        self._step_seen = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._step_seen = trainer.global_step  # a resumed fit starts at its checkpoint's step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if step == self._step_seen:
            return  # this batch accumulated gradients; no optimizer step yet
        self._step_seen = step
        if step_checkpoint_due(self.cfg, step, batch_idx + 1, trainer.num_training_batches):
            trainer.save_checkpoint(self.path, weights_only=False)  # the whole state, as ModelCheckpoint's


class LatestLearningRate(LearningRateMonitor):
    """Lightning's ``LearningRateMonitor``, its ``lrs`` holding each rate's latest value only:
    Lightning's appends the value of every logged step, for the life of the run."""

    def on_train_batch_start(self, trainer, *args, **kwargs) -> None:
        super().on_train_batch_start(trainer, *args, **kwargs)
        for values in self.lrs.values():
            del values[:-1]


class PerfMonitor(pl.Callback):
    """Samples and wall time per epoch, FLOPs of the epoch's first step; logged once per epoch."""

    def __init__(self):
        self.samples, self.start, self.flops, self._counter = 0, 0.0, None, None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.samples, self.start = 0, time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0 and self.flops is None:
            from torch.utils.flop_counter import FlopCounterMode

            self._counter = FlopCounterMode(display=False)
            self._counter.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        size = len(batch["task_names"]) if isinstance(batch, dict) and "task_names" in batch else 1
        self.samples += size
        if self._counter is not None:  # forward and backward of the first step
            self._counter.__exit__(None, None, None)
            total = self._counter.get_total_flops()
            self.flops = total / size if total else 0.0
            self._counter = None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        seconds = time.perf_counter() - self.start
        values = {
            "perf/epoch_seconds": seconds,
            "perf/samples_per_sec": self.samples / seconds if seconds else 0.0,
        }
        if self.flops:
            values["perf/flops_per_sec"] = self.flops * values["perf/samples_per_sec"]
        pl_module.log_dict(values, on_step=False, on_epoch=True, batch_size=1)


class DeadlineStop(pl.Callback):
    """``training.time_budget`` under Lightning: ``ups.deadline.StopRule`` after every training
    batch (rank 0's decision, broadcast). The step is timed from batch start to end; the
    validation from its start to the next batch (its checkpoint writes and the epoch's end
    included); before the first validation, from the sanity check's last batch (the first one
    pays for warming up) times the validation batches. A stage whose one validation would not
    fit in the time left when training would start raises ``StageOutOfTime``."""

    def __init__(self, rule: StopRule, val_batches: int, stage: str = ""):
        self.rule, self.val_batches, self.stage = rule, val_batches, stage
        self._started: float | None = None
        self._validating_since: float | None = None
        self._sanity_batch = 0.0

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._started = deadline.now()

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if trainer.sanity_checking:
            self._sanity_batch = deadline.now() - self._started

    def on_sanity_check_end(self, trainer, pl_module) -> None:
        self.rule.estimate_validation(self._sanity_batch, self.val_batches)

    def on_train_start(self, trainer, pl_module) -> None:
        """Refuse a stage that cannot validate once in time; else end a clock-driven learning-rate
        schedule when training must (a resumed stage's seconds spent before count on)."""
        left, needed = self.rule.deadline.remaining(), self.rule.reserve()
        if trainer.strategy.broadcast(left <= needed, src=0):
            raise StageOutOfTime(
                f"stage {self.stage}: training.time_budget leaves it {max(0.0, left):.1f} s, but "
                f"one validation with its checkpoint takes about {needed:.1f} s (timed on a batch); "
                f"raise training.time_shares.{self.stage} or training.time_budget, or make its "
                f"validation cheaper"
            )
        for config in trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if isinstance(scheduler, BudgetSchedule):
                seconds = scheduler.seconds_before + self.rule.schedule_seconds()
                scheduler.seconds = min(scheduler.seconds or seconds, seconds)

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._validating_since = deadline.now()

    def _validation_done(self) -> None:
        if self._validating_since is not None:
            self.rule.observe_validation(deadline.now() - self._validating_since)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._validation_done()
        self._validating_since = None
        self._started = deadline.now()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.rule.observe_step(deadline.now() - self._started)
        self._stop_if_due(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._validation_done()  # so far: the next epoch would need the time of another one
        self._stop_if_due(trainer)

    def _stop_if_due(self, trainer) -> None:
        stop = trainer.strategy.broadcast(self.rule.should_stop(), src=0)
        trainer.should_stop = trainer.should_stop or bool(stop)


class TimerReport(Timer):
    """Lightning's Timer, also writing the elapsed train time when the fit ends."""

    def __init__(self, path, duration=None):
        super().__init__(duration=duration)
        self.path = path

    def on_fit_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            report = {
                "train_seconds": self.time_elapsed("train"),
                "validate_seconds": self.time_elapsed("validate"),
                "max_time_seconds": self._duration,
            }
            atomic_write_text(self.path, json.dumps(report, indent=2) + "\n")


def max_time(cfg: Config) -> timedelta | None:
    """``training.max_time`` (any DD:HH:MM:SS, e.g. 00:00:00:90) as Lightning takes it; None: no limit."""
    seconds = max_time_seconds(cfg.training.max_time)
    return None if seconds is None else timedelta(seconds=seconds)


def measuring(cfg: Config, run: RunDir, stage_name: str) -> tuple[list[pl.Callback], object]:
    """(callbacks, profiler or None) for ``training.lightning_profile``."""
    mode = cfg.training.lightning_profile
    callbacks: list[pl.Callback] = [LatestLearningRate(logging_interval="step"), PerfMonitor()]
    folder = run.profile_dir
    if mode == "timer":
        callbacks.append(TimerReport(folder / f"{stage_name}-timer.json", max_time(cfg)))
    if mode in ("none", "timer"):
        return callbacks, None
    from lightning.pytorch import profilers

    if mode == "pytorch":
        profiler = profilers.PyTorchProfiler(
            dirpath=folder,
            filename=stage_name,
            export_to_chrome=True,
            sort_by_key="cpu_time_total",
            row_limit=30,
        )
    else:
        profiler = {"simple": profilers.SimpleProfiler, "advanced": profilers.AdvancedProfiler}[mode](
            dirpath=folder, filename=stage_name
        )
    return callbacks, profiler
