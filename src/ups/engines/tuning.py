"""Lightning's Tuner before a stage trains: the batch size (power or binary-search scaling) and
the learning rate (the LR finder), written to ``<run>/tuning.json`` (the LR curve to
``<run>/tuning_lr_<stage>.png``) and returned as config overrides for the fit.

The Tuner runs on a throwaway copy of the stage (its weights are then discarded: the fit builds a
fresh stage from the tuned config), on a Trainer without loggers or checkpoints, validation off.

- Batch size: ``stages.<stage>.batch_size``. Lightning grows it until a step runs out of memory;
  a CPU never does, so growth also stops at ``max_batch_size`` and at the train split's size.
  Several devices are refused: Lightning's batch-size finder runs on one device.
- Learning rate: ``stages.<stage>.optimizer.lr``, Lightning's suggestion (the steepest descent of
  the smoothed loss) over ``lr_steps`` exponentially spaced rates, always the whole sweep (the
  loss of small batches jumps between batches; Lightning would take that for divergence); works
  under DDP (every rank runs the search, rank 0's suggestion is broadcast to all).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import lightning.pytorch as pl

from ups.atomic import atomic_path, atomic_write_text
from ups.config import Config, with_keys
from ups.config.engines import uses_gpu
from ups.config.requests import TuningRequest
from ups.engines.lightning import StageModule
from ups.engines.loaders import build_loaders, task_sizes
from ups.engines.meters import split_terms
from ups.engines.settings import batch_size, resolve_precision, training_device
from ups.engines.sharding import strategy_for
from ups.engines.slurm import cluster_plugins
from ups.engines.speed import speed_knobs
from ups.runs import RunDir
from ups.stages.optim import resolved_optimizer

log = logging.getLogger("ups")


class TuningModule(StageModule):
    """A StageModule whose batch size and learning rate are attributes the Tuner changes: its
    train loader is rebuilt from ``batch_size``, its optimizer starts at ``lr`` (no schedule)."""

    def __init__(self, stage, cfg: Config, initial_batch_size: int, lr: float):
        super().__init__(stage, cfg, total_steps=1)
        self.batch_size, self.lr = initial_batch_size, lr

    def train_dataloader(self):
        cfg = with_keys(self.cfg, {f"stages.{self.stage.name}.batch_size": int(self.batch_size)})
        return build_loaders(
            self.stage, cfg, validate=False, rank=self.trainer.global_rank, world_size=self.trainer.world_size
        )[0]

    def val_dataloader(self):
        return []  # validation is off while tuning

    def training_step(self, batch, batch_idx):
        # no non-finite-loss policy here: the LR sweep ends at rates where the loss blows up on
        # purpose (Lightning's suggestion skips non-finite values); the weights are thrown away
        return split_terms(self.stage.training_loss(batch))[0]["loss"]

    def configure_optimizers(self):
        optimizer, _ = self.stage.configure_optimizers(1)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] = self.lr
        return optimizer


def tune(stage, cfg: Config, run_root: Path, request: TuningRequest) -> list[str]:
    """Run the Tuner on ``stage``; write tuning.json (and the LR plot); the overrides to apply
    (empty with ``apply=False``)."""
    from lightning.pytorch.tuner import Tuner

    name, t = stage.name, cfg.training
    initial_bs = batch_size(cfg, name)
    initial_lr = resolved_optimizer(cfg, name)["lr"]  # not the optimizer's: a warm-up scales it at step 0
    speed_knobs(stage.model, cfg)  # tuned as it will train (activation checkpointing, compile)
    stage.prepare(training_device(cfg), progress=False)
    module = TuningModule(stage, cfg, initial_bs, initial_lr)
    report: dict = {"stage": name, "applied": request.apply}
    overrides = []
    scratch = RunDir(run_root).tuning_scratch  # on the run folder, which every rank (every node) sees
    scratch.mkdir(parents=True, exist_ok=True)
    trainer = None
    try:
        trainer = pl.Trainer(
            accelerator="gpu" if uses_gpu(cfg) else "cpu",
            devices=t.devices,
            num_nodes=t.num_nodes,
            strategy=strategy_for(cfg, stage.all_parameters_used_every_step()),
            precision=resolve_precision(cfg),
            max_epochs=-1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            default_root_dir=scratch,
            plugins=cluster_plugins(None),  # never Lightning's auto-requeue in a tuning fit
            use_distributed_sampler=False,
        )
        tuner = Tuner(trainer)
        if request.batch_size:
            dataset_size = max(task_sizes(stage.train_dataset()))  # a batch holds one task
            cap = max(1, min(request.max_batch_size, dataset_size))
            trials = max(1, math.ceil(math.log2(max(cap / max(initial_bs, 1), 1))) + 1)
            found = tuner.scale_batch_size(
                module,
                mode=request.batch_size_mode,
                init_val=min(initial_bs, cap),
                max_trials=trials,
                max_val=cap,
                steps_per_trial=3,
            )
            found = min(int(found or initial_bs), cap)  # Lightning may step past the split's size
            report["batch_size"] = {
                "mode": request.batch_size_mode,
                "initial": initial_bs,
                "found": found,
                "max_batch_size": request.max_batch_size,
                "train_samples": dataset_size,
                "cap": cap,
                "note": "on CPU growth stops at the cap: running out of memory is not detectable there"
                if not uses_gpu(cfg)
                else "",
            }
            overrides.append(f"stages.{name}.batch_size={found}")
            module.batch_size = found
        if request.lr:
            finder = tuner.lr_find(
                module,
                min_lr=request.min_lr,
                max_lr=request.max_lr,
                num_training=request.lr_steps,
                update_attr=False,
                early_stop_threshold=None,
            )  # the whole sweep: batch-to-batch noise is no divergence
            suggestion = finder.suggestion() if finder is not None else None
            suggestion = trainer.strategy.broadcast(suggestion)  # one rate for every rank: rank 0's
            plot = RunDir(run_root).tuning_lr_plot(name)
            if finder is not None and trainer.is_global_zero:
                figure = finder.plot(suggest=suggestion is not None)
                with atomic_path(plot) as tmp:
                    figure.savefig(tmp, format="png", dpi=100)
                import matplotlib.pyplot as plt

                plt.close(figure)
            report["lr"] = {
                "initial": initial_lr,
                "suggestion": suggestion,
                "min_lr": request.min_lr,
                "max_lr": request.max_lr,
                "steps": request.lr_steps,
                "plot": RunDir(run_root).relative(plot),
                "curve": {key: list(finder.results.get(key, [])) if finder else [] for key in ("lr", "loss")},
            }
            if suggestion is None:
                log.warning(
                    "--tune-lr: the LR finder found no clear descent; %s keeps lr %.3g", name, initial_lr
                )
            else:
                overrides.append(f"stages.{name}.optimizer.lr={suggestion:.6g}")
        trainer.strategy.barrier()  # every rank has restored the weights from the scratch checkpoints
    finally:
        if trainer is None or trainer.is_global_zero:
            shutil.rmtree(scratch, ignore_errors=True)
    report["overrides"] = overrides
    if trainer.is_global_zero:
        write_report(RunDir(run_root).tuning_report, report)
        log.info(
            "tuning %s: %s%s",
            name,
            ", ".join(overrides) or "nothing to change",
            "" if request.apply else " (reported only: --no-apply-tuning)",
        )
    return overrides if request.apply else []


def write_report(path: Path, report: dict) -> None:
    """tuning.json: one entry per tuned stage (a later tuning of the same stage replaces it)."""
    existing = json.loads(path.read_text()) if path.is_file() else {}
    existing[report["stage"]] = report
    atomic_write_text(path, json.dumps(existing, indent=2, default=float) + "\n")


def tuned_overrides(run_root: Path, stage: str) -> list[str]:
    """The overrides an applied tuning of ``stage`` recorded in ``<run>/tuning.json`` (a resume
    keeps them)."""
    path = RunDir(run_root).tuning_report
    entry = json.loads(path.read_text()).get(stage, {}) if path.is_file() else {}
    return list(entry.get("overrides", [])) if entry.get("applied") else []
