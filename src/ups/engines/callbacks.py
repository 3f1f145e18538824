"""The Lightning engine's measuring callbacks and ``training.lightning_profile``.

Always (no per-step cost beyond counting): ``LearningRateMonitor`` (``lr-<optimizer>`` at the
logged steps) and ``PerfMonitor`` (per epoch: ``perf/epoch_seconds``, ``perf/samples_per_sec``
and, where PyTorch's FLOP counter sees the stage's operations, ``perf/flops_per_sec`` from the
FLOPs of the epoch's first training step).

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

import lightning.pytorch as pl
from lightning.pytorch.callbacks import LearningRateMonitor, Timer

from ups.atomic import atomic_path
from ups.config import Config, max_time_seconds
from ups.runs import RunDir


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
        values = {"perf/epoch_seconds": seconds, "perf/samples_per_sec": self.samples / seconds if seconds else 0.0}
        if self.flops:
            values["perf/flops_per_sec"] = self.flops * values["perf/samples_per_sec"]
        pl_module.log_dict(values, on_step=False, on_epoch=True, batch_size=1)


class TimerReport(Timer):
    """Lightning's Timer, also writing the elapsed train time when the fit ends."""

    def __init__(self, path, duration=None):
        super().__init__(duration=duration)
        self.path = path

    def on_fit_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            report = {"train_seconds": self.time_elapsed("train"), "validate_seconds": self.time_elapsed("validate"),
                      "max_time_seconds": self._duration}
            with atomic_path(self.path) as tmp:
                tmp.write_text(json.dumps(report, indent=2) + "\n")


def measuring(cfg: Config, run: RunDir, stage_name: str) -> tuple[list[pl.Callback], object]:
    """(callbacks, profiler or None) for ``training.lightning_profile``."""
    mode = cfg.training.lightning_profile
    callbacks: list[pl.Callback] = [LearningRateMonitor(logging_interval="step"), PerfMonitor()]
    folder = run.root / "profile"
    if mode == "timer":
        limit = max_time_seconds(cfg.training.max_time)
        callbacks.append(TimerReport(folder / f"{stage_name}-timer.json",
                                     None if limit is None else timedelta(seconds=limit)))
    if mode in ("none", "timer"):
        return callbacks, None
    from lightning.pytorch import profilers

    if mode == "pytorch":
        profiler = profilers.PyTorchProfiler(dirpath=folder, filename=stage_name, export_to_chrome=True,
                                             sort_by_key="cpu_time_total", row_limit=30)
    else:
        profiler = {"simple": profilers.SimpleProfiler, "advanced": profilers.AdvancedProfiler}[mode](
            dirpath=folder, filename=stage_name)
    return callbacks, profiler
