"""Nothing grows per step for the life of a run, in either engine: checked on the structures
themselves (a list of scalars hides in resident-memory noise). The default run checks every
container the engine, its callbacks and loggers hold after a few hundred steps; the slow test runs
5,000 steps under ``tracemalloc`` and bounds what Python holds more at the end than at step 1,000."""

from __future__ import annotations

import csv
import gc
import sys
import tracemalloc
from collections import deque
from pathlib import Path

import lightning.pytorch as pl
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from toy_stage import ToyStage, toy_config  # noqa: E402
from ups.config import with_keys  # noqa: E402
from ups.engines import fit_stage, lightning, native  # noqa: E402
from ups.runs import RunDir  # noqa: E402

SIZED = (list, dict, deque, set, tuple)


class LongStage(ToyStage):
    """One epoch of ``steps`` batches; the traced memory at call ``first`` and at the last call."""

    def __init__(self, cfg, steps: int, first: int):
        self.n_train, self.steps, self.first, self.calls, self.traced = 8 * steps, steps, first, 0, {}
        super().__init__(cfg)

    def training_loss(self, batch):
        self.calls += 1
        if tracemalloc.is_tracing() and self.calls in (self.first, self.steps):
            gc.collect()
            self.traced[self.calls] = tracemalloc.get_traced_memory()[0]
        return super().training_loss(batch)


def long_config():
    return with_keys(toy_config(skip_lightning_val=True), {"stages.autoencoder.epochs": 1})


def container_sizes(owner: str, obj) -> dict[str, int]:
    """The length of every list, dict, deque, set or tuple among ``obj``'s attributes, and of those
    a dict attribute holds (``LearningRateMonitor.lrs``: a list per rate)."""
    sizes = {}
    for name, value in vars(obj).items():
        if isinstance(value, SIZED):
            sizes[f"{owner}.{name}"] = len(value)
        if isinstance(value, dict):
            for key, inner in value.items():
                if isinstance(inner, SIZED):
                    sizes[f"{owner}.{name}[{key}]"] = len(inner)
    return sizes


class Inspect(pl.Callback):
    """At the end of training: the containers of the module, every callback and every logger."""

    def on_train_end(self, trainer, pl_module) -> None:
        self.sizes = container_sizes("module", pl_module)
        for item in [*trainer.callbacks, *trainer.loggers]:
            self.sizes.update(container_sizes(type(item).__name__, item))


def metrics_rows(run: RunDir) -> list[dict]:
    with run.metrics_csv("autoencoder").open(newline="") as f:
        return [row for row in csv.DictReader(f) if row.get("train/loss")]


@pytest.mark.parametrize("engine", ["lightning", "native"])
def test_no_structure_grows_with_the_step_count(tmp_path, engine, monkeypatch):
    steps, window = 300, 20
    monkeypatch.setattr(lightning, "RECENT_LOSSES", window)
    monkeypatch.setattr(native, "RECENT_LOSSES", window)
    cfg, run = long_config(), RunDir(tmp_path / "run")
    if engine == "lightning":
        inspect = Inspect()
        result = fit_stage(LongStage(cfg, steps, 0), cfg, run, engine=engine, callbacks=[inspect])
        sizes = inspect.sizes
    else:
        trainer = native.NativeTrainer(LongStage(cfg, steps, 0), cfg, run)
        result = trainer.fit()
        sizes = {**container_sizes("trainer", trainer), **container_sizes("csv", trainer.csv)}
    assert result.global_step == steps
    assert max(sizes.values()) < steps // 4, sizes  # nothing near one entry per step
    logged = metrics_rows(run)  # the history is on disk, every step of it
    assert len(logged) == steps and len(result.train_losses) == window
    assert result.train_losses == pytest.approx([float(r["train/loss"]) for r in logged[-window:]], rel=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["lightning", "native"])
def test_a_5000_step_run_holds_no_more_memory_at_its_end_than_at_step_1000(tmp_path, engine):
    steps, first = 5000, 1000
    cfg = long_config()
    stage = LongStage(cfg, steps, first)
    tracemalloc.start()
    try:
        result = fit_stage(stage, cfg, RunDir(tmp_path / "run"), engine=engine)
    finally:
        tracemalloc.stop()
    growth = stage.traced[steps] - stage.traced[first]
    kept = len(result.train_losses)
    print(f"{engine}: {kept} losses kept, {growth} bytes more at step {steps} than at step {first}")
    # before issue 30: 5,000 losses kept and +446 kB (Lightning) / +2.0 MB (native); one float per
    # step for 4,000 steps would be about +128 kB
    assert len(result.train_losses) == native.RECENT_LOSSES
    assert growth < 64 * 1024
