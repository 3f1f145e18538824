"""The Lightning engine: one generic LightningModule around any Stage, and ``build_trainer``.

The module only forwards to the stage (losses, metrics, optimizers, train/eval mode) and
adds the ``ups`` block to every checkpoint; the Trainer does the rest.
"""

from __future__ import annotations

import sys
from collections import deque
from contextlib import nullcontext
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from ups import tracking
from ups.checkpoint import STATE_PREFIX, ups_block
from ups.config import Config
from ups.config.engines import uses_gpu
from ups.deadline import Deadline, StopRule
from ups.engines.callbacks import DeadlineStop, StepCheckpoint, max_time, measuring
from ups.engines.checkpoint_io import AtomicCheckpointIO
from ups.engines.ema import EMA
from ups.engines.lightning_adapter import refuse_in_process_launchers, should_update_logs
from ups.engines.loaders import build_loaders
from ups.engines.loggers import RunTensorBoardLogger, StageCSVLogger, WandbStageLogger
from ups.engines.meters import MONITOR, MetricMeans, split_terms, train_log_values, validation_means
from ups.engines.nan_policy import check_finite_gradients, check_finite_loss
from ups.engines.progress import RECENT_LOSSES, FitResult, inside_epoch, progress_record
from ups.engines.settings import (
    batch_size,
    ema_decay,
    resolve_precision,
    stage_settings,
    total_optimizer_steps,
    validation_on,
)
from ups.engines.sharding import shard_fully, strategy_for
from ups.engines.slurm import cluster_plugins, remove_requeue_files, requeue_checkpoint, requeue_dir
from ups.engines.speed import speed_knobs
from ups.runs import BEST_FILENAME, RunDir
from ups.stages.optim import BudgetSchedule


class StageModule(pl.LightningModule):
    """Drives a Stage under Lightning; holds the stage's module as ``self.model``."""

    def __init__(self, stage, cfg: Config, total_steps: int, train_loader=None):
        super().__init__()
        self.stage, self.cfg, self.total_steps = stage, cfg, total_steps
        self.train_loader = train_loader  # the ResumableLoader whose position checkpoints record
        self.model = stage.model
        decay = ema_decay(cfg, stage.name)
        self.ema = EMA(stage.model, decay) if decay else None
        self.train_losses: deque[torch.Tensor] = deque(maxlen=RECENT_LOSSES)
        self.val_history: list[dict[str, float]] = []
        self._metrics = MetricMeans()
        self._train_metrics = MetricMeans()
        self._skipped = 0

    def epoch_means(self, meter: MetricMeans, prefix: str) -> dict[str, float]:
        """The epoch's means over every rank (one gather per epoch, never per step)."""
        return meter.means(prefix, self.world_totals(meter))

    def world_totals(self, meter: MetricMeans) -> list[dict[str, tuple[float, int]]]:
        """Every rank's ``meter.totals()`` (a collective under several ranks)."""
        if self.trainer.world_size == 1:
            return [meter.totals()]
        world = [None] * self.trainer.world_size
        torch.distributed.all_gather_object(world, meter.totals())
        return world

    # ---- training -----------------------------------------------------------------
    def on_train_start(self) -> None:
        self.stage.set_train_mode(True)  # also where a resume inside an epoch skips on_train_epoch_start

    def on_train_epoch_start(self) -> None:
        self.stage.set_train_mode(True)
        self._train_metrics = MetricMeans()

    def training_step(self, batch, batch_idx):
        scalars, per_sample = split_terms(self.stage.training_loss(batch))
        loss = scalars["loss"]
        self.train_losses.append(loss.detach())
        if not check_finite_loss(scalars, self.cfg, self.global_step, self._skipped):
            self._skipped += 1
            return None  # Lightning skips backward for this batch
        self._train_metrics.add(per_sample)
        if should_update_logs(self.trainer):  # only steps that are written
            self.log_dict(
                train_log_values(scalars),
                on_step=True,
                on_epoch=False,
                batch_size=batch_size(self.cfg, self.stage.name),
            )
        return loss

    def on_train_epoch_end(self) -> None:
        values = self.epoch_means(self._train_metrics, "train")
        if values:
            self.log_dict(values, on_step=False, on_epoch=True, batch_size=1)

    def on_before_optimizer_step(self, optimizer) -> None:
        """``training.nan_policy`` on the gradients, before clipping and the step."""
        if not check_finite_gradients(self._named_trainable, self.cfg, self.global_step, self._skipped):
            self._skipped += 1

    @property
    def _named_trainable(self) -> list:
        if not hasattr(self, "_named"):
            self._named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        return self._named

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update(self.model)

    def configure_optimizers(self):
        optimizer, scheduler = self.stage.configure_optimizers(self.total_steps)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def lr_scheduler_step(self, scheduler, metric) -> None:
        """A schedule that runs over ``training.max_time`` reads a clock; with several ranks, all
        of them step with rank 0's seconds spent (one scalar broadcast per step), so that their
        rates, and so their replicas, stay identical."""
        if isinstance(scheduler, BudgetSchedule) and scheduler.seconds and self.trainer.world_size > 1:
            scheduler.step_with_seconds(float(self.trainer.strategy.broadcast(scheduler.spent(), src=0)))
        else:
            super().lr_scheduler_step(scheduler, metric)

    # ---- validation ---------------------------------------------------------------
    def on_validation_model_eval(self) -> None:
        self.stage.set_train_mode(False)

    def on_validation_model_train(self) -> None:
        self.stage.set_train_mode(True)

    def on_validation_epoch_start(self) -> None:
        self._metrics = MetricMeans()
        self._ema_context = nullcontext() if self.ema is None else self.ema.applied(self.model)
        self._ema_context.__enter__()

    def validation_step(self, batch, batch_idx) -> None:
        self._metrics.add(self.stage.validation_metrics(batch))

    def on_validation_epoch_end(self) -> None:
        self._ema_context.__exit__(None, None, None)
        if self.trainer.sanity_checking:
            return
        values = validation_means(self.epoch_means(self._metrics, "val"))
        self.log_dict(values, on_epoch=True, batch_size=1)
        self.val_history.append({**values, "epoch": self.current_epoch, "step": self.global_step})

    def configure_model(self) -> None:
        """Under ``training.strategy=fsdp`` on CPUs: shard the model (``ups.engines.sharding``)."""
        from lightning.pytorch.strategies import ModelParallelStrategy

        if isinstance(self.trainer.strategy, ModelParallelStrategy) and not getattr(self, "_sharded", False):
            shard_fully(self.model, self.device_mesh["data_parallel"])
            self._sharded = True

    # ---- checkpoints --------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Runs on every rank (the gather of the epoch's training metrics is a collective)."""
        checkpoint["ups"] = ups_block(self.stage, self.cfg, "lightning")
        if self.train_loader is not None:
            totals = MetricMeans.merge(self.world_totals(self._train_metrics))
            checkpoint["ups"]["progress"] = progress_record(self.train_loader, self._skipped, totals)
        if self.ema is not None:
            checkpoint["ema_state_dict"] = self.ema.state_dict(STATE_PREFIX)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Weights, loop and callback state are Lightning's to restore (from a Lightning checkpoint:
        ``preflight`` refuses the native engine's); this restores the rest. Inside an epoch,
        Lightning does not call ``on_train_epoch_start`` again: the epoch's training metrics so far
        (every rank's, added) go to rank 0, the other ranks start from zero."""
        extra = checkpoint.get("ups", {}).get("extra_state")
        if extra:
            self.stage.load_extra_state(extra)
        progress = checkpoint.get("ups", {}).get("progress")
        self._skipped = int(progress["skipped"]) if progress else 0
        if inside_epoch(progress):
            rank_zero = self.trainer.global_rank == 0
            self._train_metrics = MetricMeans.from_totals(progress["train_totals"] if rank_zero else {})
        if self.ema is not None and "ema_state_dict" in checkpoint:
            self.ema.load_state_dict(checkpoint["ema_state_dict"], STATE_PREFIX)


def monitor_callbacks(cfg: Config, run: RunDir, stage_name: str) -> list[pl.Callback]:
    """ModelCheckpoint (+ EarlyStopping with validation on), as both engines name and rank them."""
    dirpath = run.checkpoint_dir(stage_name)
    # no version counter: ``last.ckpt`` is overwritten, never joined by ``last-v1.ckpt``, when
    # StepCheckpoint (or an interrupted run) wrote it before this callback's first save
    if not validation_on(cfg):
        # no monitor: the "top 1" is the newest, named last.ckpt, written at every epoch's end
        # (``save_last`` alone would write only at the fit's end: nothing saved to follow)
        return [
            ModelCheckpoint(
                dirpath=dirpath, monitor=None, save_top_k=1, filename="last", enable_version_counter=False
            )
        ]
    return [
        ModelCheckpoint(
            dirpath=dirpath,
            monitor=MONITOR,
            mode="min",
            save_top_k=cfg.checkpoint.save_top_k,
            save_last=True,
            filename=BEST_FILENAME,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        ),
        EarlyStopping(monitor=MONITOR, mode="min", patience=stage_settings(cfg, stage_name).patience),
    ]


def build_trainer(
    cfg: Config,
    run: RunDir,
    stage_name: str,
    callbacks_extra=(),
    *,
    all_parameters_used: bool = True,
    step_offset: int = 0,
    sanity_batches: int = 0,
    resume: bool = False,
) -> pl.Trainer:
    """The config's ``training``, ``checkpoint``, ``logging`` and ``stages.<stage>`` as a Trainer;
    its loggers add ``step_offset`` to every step (the run's continuous step axis), and a resumed
    fit (``resume``) continues the stage's metrics.csv.
    ``sanity_batches``: validation batches run before training (``DeadlineStop`` times one)."""
    t = cfg.training
    loggers = [StageCSVLogger(run.log_dir(stage_name), step_offset, append=resume)]
    if cfg.logging.tensorboard:
        loggers.append(RunTensorBoardLogger(run, stage_name, step_offset))
    if tracking.active() is not None:
        loggers.append(WandbStageLogger(stage_name, step_offset))
    measures, profiler = measuring(cfg, run, stage_name)
    callbacks = monitor_callbacks(cfg, run, stage_name) + measures + list(callbacks_extra)
    if cfg.checkpoint.every_n_steps is not None:
        callbacks.append(StepCheckpoint(cfg, run.last_checkpoint(stage_name)))
    validate = validation_on(cfg)
    return pl.Trainer(
        accelerator="gpu" if uses_gpu(cfg) else "cpu",
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=strategy_for(cfg, all_parameters_used),
        precision=resolve_precision(cfg),
        gradient_clip_val=t.gradient_clip_val,
        gradient_clip_algorithm="norm",
        accumulate_grad_batches=t.accumulate_grad_batches,
        max_epochs=stage_settings(cfg, stage_name).epochs,
        max_time=max_time(cfg),
        deterministic=t.deterministic,
        log_every_n_steps=t.log_every_n_steps,
        val_check_interval=1.0 if validate else None,
        limit_val_batches=None if validate else 0,
        check_val_every_n_epoch=t.val_every_n_epochs if validate else 1,
        num_sanity_val_steps=sanity_batches,
        enable_model_summary=False,
        enable_progress_bar=sys.stderr.isatty(),
        logger=loggers,
        callbacks=callbacks,
        use_distributed_sampler=False,
        default_root_dir=requeue_dir(run, stage_name),  # a requeue's checkpoint stays with its stage
        plugins=[AtomicCheckpointIO(run, stage_name, cfg.checkpoint.keep_last), *cluster_plugins(cfg)],
        profiler=profiler,
    )


def fit_lightning(
    stage,
    cfg: Config,
    run: RunDir,
    *,
    resume: bool = False,
    callbacks=(),
    step_offset: int = 0,
    deadline: Deadline | None = None,
) -> FitResult:
    validate = validation_on(cfg)
    requeued = requeue_checkpoint(cfg, run, stage.name, resume=resume)
    if requeued is not None:
        resume, start = True, requeued
    else:
        start = run.resume_checkpoint(stage.name) if resume else None  # the newest intact kept one
    stop = None if deadline is None else DeadlineStop(StopRule(deadline, validates=validate), 0, stage.name)
    trainer = build_trainer(
        cfg,
        run,
        stage.name,
        [*callbacks, *([stop] if stop else [])],
        all_parameters_used=stage.all_parameters_used_every_step(),
        step_offset=step_offset,
        sanity_batches=2 if stop and validate else 0,
        resume=resume,
    )
    refuse_in_process_launchers(trainer)
    stage.prepare(trainer.strategy.root_device, progress=sys.stderr.isatty())
    train_loader, val_loader = build_loaders(
        stage, cfg, validate=validate, rank=trainer.global_rank, world_size=trainer.world_size
    )
    if stop is not None and val_loader is not None:
        stop.val_batches = len(val_loader)
    epochs = stage_settings(cfg, stage.name).epochs
    total_steps = total_optimizer_steps(len(train_loader), cfg.training.accumulate_grad_batches, epochs)
    module = StageModule(stage, cfg, total_steps, train_loader)
    speed_knobs(stage.model, cfg)
    trainer.fit(
        module,
        train_dataloaders=train_loader,
        val_dataloaders=val_loader,
        ckpt_path=start and str(start),  # checked to fit by preflight; no stale hpc_ckpt left
        weights_only=True,
    )
    remove_requeue_files(run, stage.name)
    checkpointer = trainer.checkpoint_callback
    losses = [float(x) for x in torch.stack(list(module.train_losses)).cpu()] if module.train_losses else []
    best = checkpointer.best_model_path if validate and checkpointer.best_model_path else None
    return FitResult(
        best_path=Path(best) if best else None,
        last_path=run.last_checkpoint(stage.name),
        best_score=float(checkpointer.best_model_score) if best else None,
        train_losses=losses,
        val_history=module.val_history,
        global_step=trainer.global_step,
        epochs_run=trainer.current_epoch,
        stopped_early=trainer.current_epoch < epochs,
    )
