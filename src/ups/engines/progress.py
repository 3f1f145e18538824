"""A fit's progress, alike in both engines: the ``ups.progress`` record of every checkpoint, the
rule for checkpoints inside an epoch (``checkpoint.every_n_steps``), and what a fit returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ups.config import Config
from ups.engines.loaders import ResumableLoader


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


RECENT_LOSSES = 1024  # the training losses a fit keeps (FitResult.train_losses): a bound, not a history


@dataclass
class FitResult:
    best_path: Path | None
    last_path: Path
    best_score: float | None  # lowest val/nrmse seen (None without validation)
    # "loss" of the last (at most RECENT_LOSSES) training batches of this fit, in order; the whole
    # history of a run is its metrics.csv
    train_losses: list[float]
    val_history: list[dict[str, float]] = field(default_factory=list)
    global_step: int = 0  # optimizer steps, including those before a resume
    epochs_run: int = 0  # finished epochs, including those before a resume
    stopped_early: bool = False  # stopped before stages.<stage>.epochs
