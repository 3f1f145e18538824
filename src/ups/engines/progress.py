"""Progress inside an epoch: checkpoints every ``checkpoint.every_n_steps`` optimizer steps and
resuming from them on the next batch, alike in both engines.

- ``ResumableLoader``: the training loader, which knows (and, after a resume, restores) its
  position in the epoch.
- ``progress_record``: the ``ups.progress`` block every checkpoint of either engine carries.
- ``step_checkpoint_due``: the one rule for when such a checkpoint is written.
- ``StepCheckpoint``: that rule as a Lightning callback (the native loop calls it itself).
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
from torch.utils.data import DataLoader

from ups.config import Config


class ResumableLoader(DataLoader):
    """The training loader, which knows how far into its epoch it is.

    ``state_dict()`` is ``{"epoch": e, "batches": k}``: k batches of epoch e handed out. After
    ``load_state_dict`` the next pass over epoch e starts at batch k (``TaskBatchSampler.skip``),
    so a resume from a checkpoint written inside an epoch trains on exactly the batches the
    interrupted run had left. Lightning saves and restores this through its loop state (it does
    so for loaders with ``state_dict``/``load_state_dict``); the native engine through the
    checkpoint's ``ups.progress`` (``progress_record``).

    ``__iter__`` is a generator, so the epoch and the start are read at the first batch, after
    the engine has called ``set_epoch`` (Lightning creates the iterator before that).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._position = {"epoch": self.batch_sampler.epoch, "batches": 0}
        self._resume: dict | None = None

    def __iter__(self):
        sampler = self.batch_sampler
        resume, self._resume = self._resume, None
        start = resume["batches"] if resume is not None and resume["epoch"] == sampler.epoch else 0
        sampler.skip = start
        self._position = {"epoch": sampler.epoch, "batches": start}
        for batch in super().__iter__():
            self._position["batches"] += 1
            yield batch

    def state_dict(self) -> dict:
        return dict(self._position)

    def load_state_dict(self, state: dict) -> None:
        self._resume = {"epoch": int(state["epoch"]), "batches": int(state["batches"])}


def progress_record(
    loader: ResumableLoader, skipped: int, train_totals: dict[str, tuple[float, int]]
) -> dict:
    """Where the stage is, for ``ups.progress`` in every checkpoint of either engine: the loader's
    position in its epoch (``batches == batches_per_epoch`` at an epoch's end), the batches
    skipped by ``nan_policy`` so far, and the running sums and counts of the epoch's training
    metrics over every rank (``MetricMeans.merge``)."""
    return {
        **loader.state_dict(),
        "batches_per_epoch": len(loader),
        "skipped": skipped,
        "train_totals": {k: [total, count] for k, (total, count) in train_totals.items()},
    }


def inside_epoch(progress: dict | None) -> bool:
    """Whether a checkpoint's ``ups.progress`` was written before its epoch's last batch."""
    return progress is not None and progress["batches"] < progress["batches_per_epoch"]


def step_checkpoint_due(cfg: Config, global_step: int, batches_done: int, n_batches: int) -> bool:
    """``checkpoint.every_n_steps``: ``last`` is written after an optimizer step that brings the
    count to a multiple of n, except after the epoch's last batch (the end-of-epoch checkpoints,
    written after validation, follow there)."""
    every = cfg.checkpoint.every_n_steps
    return every is not None and global_step % every == 0 and batches_done < n_batches


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
            trainer.save_checkpoint(
                self.path, weights_only=False
            )  # the whole state, as ModelCheckpoint saves
