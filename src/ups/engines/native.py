"""The native engine: a plain PyTorch loop with the Lightning engine's semantics, step for step.

Per epoch e: ``sampler.set_epoch(e)``; per batch: loss / accumulate, backward; an optimizer
step (clip by norm, step, scheduler step, EMA update, zero grad) every ``accumulate`` batches
and after the epoch's last batch, and ``last`` every ``checkpoint.every_n_steps`` steps inside
the epoch. Then validation (EMA weights when EMA is on; after every ``training.val_every_n_epochs``-th
epoch), the early-stop rule, the best-k and last checkpoints (after each validation) - in Lightning's
order, with Lightning's file names. Its checkpoints hold the weights and the UPS block
(``ups.checkpoint``), its best-k and patience state in ``ups.selection``, and no Lightning loop
state: only this engine resumes them. One device only; distribution is Lightning's job.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections import deque
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch

from ups import tracking
from ups.checkpoint import (
    STATE_PREFIX,
    load_checkpoint,
    load_into,
    model_state_dict,
    save_checkpoint,
    ups_block,
)
from ups.config import Config, max_time_seconds
from ups.engines.ema import EMA
from ups.engines.loaders import build_loaders
from ups.engines.meters import MetricMeans, split_terms, train_log_values, validation_means
from ups.engines.metrics_csv import MetricsCSV, metrics_row
from ups.engines.nan_policy import check_finite_gradients, check_finite_loss
from ups.engines.progress import (
    RECENT_LOSSES,
    FitResult,
    inside_epoch,
    progress_record,
    step_checkpoint_due,
)
from ups.engines.settings import (
    ema_decay,
    resolve_precision,
    stage_settings,
    total_optimizer_steps,
    training_device,
    validation_on,
)
from ups.engines.speed import speed_knobs
from ups.errors import UPSError
from ups.runs import RunDir
from ups.stages.batch import to_device

log = logging.getLogger("ups")


@dataclass
class TopK:
    """Lightning ModelCheckpoint's top-k rule for mode="min": keep the k lowest scores; a new score
    enters when fewer than k are kept or it is strictly lower than the worst kept one."""

    k: int
    best_k_models: dict[str, float] = field(default_factory=dict)

    def admits(self, score: float) -> bool:
        if len(self.best_k_models) < self.k:
            return True
        return score < self.best_k_models[self.worst()]

    def worst(self) -> str:
        return max(self.best_k_models, key=self.best_k_models.get)

    def best(self) -> str | None:
        return min(self.best_k_models, key=self.best_k_models.get) if self.best_k_models else None

    def add(self, path: str, score: float) -> str | None:
        """Record ``path``; returns the path that dropped out (to delete), if any."""
        dropped = self.worst() if len(self.best_k_models) == self.k else None
        if dropped is not None:
            del self.best_k_models[dropped]
        self.best_k_models[path] = score
        return dropped


@dataclass
class Patience:
    """Lightning EarlyStopping's rule for mode="min", min_delta=0: an improvement is a strictly lower
    value; ``patience`` validations without one stop training; a non-finite value stops at once."""

    patience: int
    best: float = math.inf
    wait: int = 0

    def should_stop(self, value: float) -> bool:
        if not math.isfinite(value):
            return True
        if value < self.best:
            self.best, self.wait = value, 0
            return False
        self.wait += 1
        return self.wait >= self.patience


class NativeTrainer:
    """Holds the state of one fit; ``fit`` is the loop."""

    def __init__(self, stage, cfg: Config, run: RunDir, *, resume: bool = False, step_offset: int = 0):
        self.stage, self.cfg, self.run = stage, cfg, run
        precision = resolve_precision(cfg)  # 32-true or bf16-mixed: ups.resolve refused the others
        self.device = training_device(cfg)
        self.autocast = (
            torch.autocast(self.device.type, dtype=torch.bfloat16)
            if precision == "bf16-mixed"
            else nullcontext()
        )
        self.validate = validation_on(cfg)
        self.settings = stage_settings(cfg, stage.name)
        self.accumulate = cfg.training.accumulate_grad_batches
        stage.prepare(self.device, progress=sys.stderr.isatty())
        self.train_loader, self.val_loader = build_loaders(stage, cfg, validate=self.validate)
        self.total_steps = total_optimizer_steps(
            len(self.train_loader), self.accumulate, self.settings.epochs
        )
        if cfg.training.deterministic:
            torch.use_deterministic_algorithms(True)
        stage.model.to(self.device)
        self.optimizer, self.scheduler = stage.configure_optimizers(self.total_steps)
        decay = ema_decay(cfg, stage.name)
        self.ema = EMA(stage.model, decay) if decay else None
        self.top_k = TopK(cfg.checkpoint.save_top_k)
        self.patience = Patience(self.settings.patience)
        self.epoch, self.global_step = 0, 0  # next epoch to run; optimizer steps taken
        self.start_batch = 0  # where the next epoch starts (> 0 when resuming inside an epoch)
        self.train_metrics = MetricMeans()  # the running epoch's per-sample training metrics
        self.train_losses: deque[float] = deque(maxlen=RECENT_LOSSES)
        self.val_history: list[dict[str, float]] = []
        self.last_score: float | None = None
        self.skipped = 0
        self.csv = MetricsCSV(run.log_dir(stage.name) / "metrics.csv", append=resume)
        self.step_offset = step_offset

    def log(self, metrics: dict, step: int) -> None:
        """A row of metrics.csv, its step shifted by ``step_offset``; also to the run's W&B run."""
        row = metrics_row(metrics, step + self.step_offset)
        tracker = tracking.active()
        if tracker is not None:
            tracker.log_training(self.stage.name, row, row["step"])
        self.csv.log(row)

    # ---- the loop -----------------------------------------------------------------
    def fit(self) -> FitResult:
        deadline = max_time_seconds(self.cfg.training.max_time)
        deadline = deadline and time.monotonic() + deadline
        stopped, every, saved = False, self.cfg.training.val_every_n_epochs, False
        while self.epoch < self.settings.epochs and not stopped:
            self.train_epoch()
            stopped = deadline is not None and time.monotonic() > deadline
            validating = self.validate and (self.epoch + 1) % every == 0
            if validating:
                stopped = self.patience.should_stop(self.validation()) or stopped
            if self.train_epoch_means:  # after validation, in Lightning's order
                self.log({**self.train_epoch_means, "epoch": self.epoch}, self.global_step - 1)
            # ModelCheckpoint's rule: after every epoch when validating after each (or never), else after
            # each validation only
            if validating or every == 1 or not self.validate:
                self.save_epoch_checkpoints()
                saved = True
            elif not saved and (stopped or self.epoch + 1 == self.settings.epochs):
                # ModelCheckpoint.on_train_end: a fit that trained but validated nothing writes last at
                # its end
                self.save_last(self.checkpoint())
            self.epoch += 1
        best = self.top_k.best()
        return FitResult(
            best_path=Path(best) if best else None,
            last_path=self.run.last_checkpoint(self.stage.name),
            best_score=self.top_k.best_k_models[best] if best else None,
            train_losses=list(self.train_losses),
            val_history=self.val_history,
            global_step=self.global_step,
            epochs_run=self.epoch,
            stopped_early=self.epoch < self.settings.epochs,
        )

    def train_epoch(self) -> None:
        self.stage.set_train_mode(True)
        self.train_loader.batch_sampler.set_epoch(self.epoch)
        n_batches = len(self.train_loader)
        start, self.start_batch = self.start_batch, 0
        if start == 0:
            self.train_metrics = MetricMeans()
        for batch_idx, batch in enumerate(self.train_loader, start=start):
            batch = to_device(batch, self.device)
            with self.autocast:
                scalars, per_sample = split_terms(self.stage.training_loss(batch))
            loss = scalars["loss"]
            self.train_losses.append(loss.item())
            if check_finite_loss(scalars, self.cfg, self.global_step, self.skipped):
                (loss / self.accumulate).backward()
                self.train_metrics.add(per_sample)
                if (self.global_step + 1) % self.cfg.training.log_every_n_steps == 0:
                    self.log({**train_log_values(scalars), "epoch": self.epoch}, self.global_step)
            else:
                self.skipped += 1
            if (batch_idx + 1) % self.accumulate == 0 or batch_idx + 1 == n_batches:
                self.optimizer_step()
                if step_checkpoint_due(self.cfg, self.global_step, batch_idx + 1, n_batches):
                    self.save_last(self.checkpoint())
        self.train_epoch_means = self.train_metrics.means("train")

    def optimizer_step(self) -> None:
        named = [(n, p) for n, p in self.stage.model.named_parameters() if p.requires_grad]
        if not check_finite_gradients(named, self.cfg, self.global_step, self.skipped):
            self.skipped += 1  # the gradients are gone: the step below changes nothing, as under Lightning
        clip = self.cfg.training.gradient_clip_val
        if clip is not None:
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, clip)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.stage.model)
        self.optimizer.zero_grad()
        if self.scheduler is not None:
            self.scheduler.step()
        self.global_step += 1

    @torch.no_grad()
    def validation(self) -> float:
        self.stage.set_train_mode(False)
        means = MetricMeans()
        with nullcontext() if self.ema is None else self.ema.applied(self.stage.model):
            for batch in self.val_loader:
                with self.autocast:
                    means.add(self.stage.validation_metrics(to_device(batch, self.device)))
        self.stage.set_train_mode(True)
        values = validation_means(means.means("val"))
        self.log({**values, "epoch": self.epoch}, self.global_step - 1)
        self.val_history.append({**values, "epoch": self.epoch, "step": self.global_step})
        self.last_score = values["val/nrmse"]
        return self.last_score

    # ---- checkpoints --------------------------------------------------------------
    def save_epoch_checkpoints(self) -> None:
        """Best-k (ModelCheckpoint's rule), then last - Lightning's order on train-epoch end.

        Both files hold the same dict, built once after the best-k bookkeeping is updated.
        """
        best_path, dropped = None, None
        if self.validate:
            score = self.last_score if self.last_score == self.last_score else float("inf")
            if self.top_k.admits(score):
                best_path = self.run.best_checkpoint_path(self.stage.name, self.epoch, self.global_step)
                dropped = self.top_k.add(str(best_path), score)
        ckpt = self.checkpoint()
        if best_path is not None:
            save_checkpoint(ckpt, best_path)
            if dropped and dropped != str(best_path):
                Path(dropped).unlink(missing_ok=True)
        self.save_last(ckpt)

    def save_last(self, ckpt: dict) -> None:
        """``last.ckpt``, the earlier ones moved along (``checkpoint.keep_last``)."""
        rotate = partial(self.run.rotate_last, self.stage.name, self.cfg.checkpoint.keep_last)
        save_checkpoint(ckpt, self.run.last_checkpoint(self.stage.name), before_replace=rotate)

    def checkpoint(self) -> dict:
        ckpt = {
            "epoch": self.epoch,
            "global_step": self.global_step,
            "state_dict": model_state_dict(self.stage),
            "optimizer_states": [self.optimizer.state_dict()],
            "lr_schedulers": [self.scheduler.state_dict()] if self.scheduler is not None else [],
            "ups": {
                **ups_block(self.stage, self.cfg, "native"),
                "progress": progress_record(self.train_loader, self.skipped, self.train_metrics.totals()),
                "selection": {
                    "best_k_models": {self.run.relative(p): s for p, s in self.top_k.best_k_models.items()},
                    "patience_best": self.patience.best,
                    "patience_wait": self.patience.wait,
                },
            },
        }
        if self.ema is not None:
            ckpt["ema_state_dict"] = self.ema.state_dict(STATE_PREFIX)
        return ckpt

    def resume(self) -> None:
        """Continue from this engine's newest intact last checkpoint (``RunDir.resume_checkpoint``):
        weights, optimizer, scheduler, EMA, generator, counters, the best-k / early-stopping state (the
        best-k files still there, re-rooted in this run folder) and, for a checkpoint written inside an
        epoch, the position in that epoch and the epoch's running training metrics."""
        ckpt = load_checkpoint(self.run.resume_checkpoint(self.stage.name))
        load_into(self.stage, ckpt)
        self.optimizer.load_state_dict(ckpt["optimizer_states"][0])
        if self.scheduler is not None and ckpt.get("lr_schedulers"):
            self.scheduler.load_state_dict(ckpt["lr_schedulers"][0])
        if self.ema is not None and "ema_state_dict" in ckpt:
            self.ema.load_state_dict(ckpt["ema_state_dict"], STATE_PREFIX)
        self.epoch, self.global_step = int(ckpt["epoch"]) + 1, int(ckpt["global_step"])
        progress = ckpt["ups"].get("progress")
        self.skipped = int(progress["skipped"]) if progress else 0
        if inside_epoch(progress):
            self.epoch, self.start_batch = int(ckpt["epoch"]), int(progress["batches"])
            self.train_loader.load_state_dict(progress)
            self.train_metrics = MetricMeans.from_totals(progress["train_totals"])
        selection = ckpt["ups"].get("selection")
        if self.validate and selection:
            kept = {
                self.run.reroot(path, self.stage.name): score
                for path, score in selection["best_k_models"].items()
            }
            self.top_k.best_k_models = {str(path): score for path, score in kept.items() if path.exists()}
            self.patience.best, self.patience.wait = selection["patience_best"], selection["patience_wait"]


def fit_native(
    stage, cfg: Config, run: RunDir, *, resume: bool = False, callbacks=(), step_offset: int = 0
) -> FitResult:
    if callbacks:
        raise UPSError("Lightning callbacks need the Lightning engine (--engine lightning).")
    if cfg.logging.tensorboard:
        log.info(
            "logging.tensorboard: the native engine writes metrics.csv only; TensorBoard logs come "
            "with --engine lightning."
        )
    speed_knobs(stage.model, cfg)
    trainer = NativeTrainer(stage, cfg, run, resume=resume, step_offset=step_offset)
    if resume:
        trainer.resume()
    return trainer.fit()
