"""What both engines share, so that they see the same numbers: loaders and their task-aware sampler,
the optimizer-step budget, EMA, validation-metric averaging, log keys, checkpoint names and
the state of the best-k / early-stopping rules.
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from ups.config import Config
from ups.config.engines import uses_gpu
from ups.data.sampling import TaskBatchSampler
from ups.engines.progress import ResumableLoader
from ups.errors import UPSError

MONITOR = "val/nrmse"

log = logging.getLogger("ups")


@dataclass
class FitResult:
    best_path: Path | None
    last_path: Path
    best_score: float | None  # lowest val/nrmse seen (None without validation)
    train_losses: list[float]  # "loss" of every training batch of this fit, in order
    val_history: list[dict[str, float]] = field(default_factory=list)
    global_step: int = 0  # optimizer steps, including those before a resume
    epochs_run: int = 0  # finished epochs, including those before a resume
    stopped_early: bool = False  # stopped before stages.<stage>.epochs


# ------------------------------------------------------------------------------ data
def task_sizes(dataset) -> list[int]:
    """Items per task (contiguous ranges); a dataset that does not group by task is one task."""
    return list(getattr(dataset, "task_sizes", [len(dataset)]))


def batch_size(cfg: Config, stage_name: str) -> int:
    """``stages.<stage>.batch_size``, else ``training.batch_size``."""
    own = stage_settings(cfg, stage_name).batch_size
    return own if own is not None else cfg.training.batch_size


def ema_decay(cfg: Config, stage_name: str) -> float | None:
    """``stages.<stage>.ema_decay``, else ``training.ema_decay`` (None: no EMA)."""
    own = stage_settings(cfg, stage_name).ema_decay
    return own if own is not None else cfg.training.ema_decay


def task_batch_sampler(
    dataset, cfg: Config, stage_name: str, *, train: bool, rank: int = 0, world_size: int = 1
) -> TaskBatchSampler:
    """One-task batches of the stage's batch size sharded over ``world_size`` ranks: shuffled per
    epoch with ``data.task_sampling`` and the tasks' weights for training, in order (every sample
    once, or the fixed subset of ``training.val_max_samples``) for validation."""
    return TaskBatchSampler(
        task_sizes(dataset),
        batch_size(cfg, stage_name),
        seed=cfg.seed,
        shuffle=train,
        strategy=cfg.data.task_sampling if train else "proportional",
        rank=rank,
        world_size=world_size,
        weights=getattr(dataset, "task_weights", None) if train else None,
        limit=None if train else cfg.training.val_max_samples,
    )


def build_loaders(
    stage, cfg: Config, *, validate: bool, rank: int = 0, world_size: int = 1
) -> tuple[DataLoader, DataLoader | None]:
    """(train loader, val loader or None), each drawing its batches from ``task_batch_sampler``."""
    t = cfg.training
    common = dict(
        num_workers=t.num_workers,
        pin_memory=t.pin_memory and uses_gpu(cfg),
        persistent_workers=t.persistent_workers and t.num_workers > 0,
        collate_fn=stage.collate,
    )
    if t.num_workers > 0 and t.prefetch_factor is not None:
        common["prefetch_factor"] = t.prefetch_factor

    def loader(dataset, train: bool) -> DataLoader:
        sampler = task_batch_sampler(dataset, cfg, stage.name, train=train, rank=rank, world_size=world_size)
        return (ResumableLoader if train else DataLoader)(dataset, batch_sampler=sampler, **common)

    # both splits are checked non-empty and large enough for the ranks by ``ups.engines.preflight``
    train = loader(stage.train_dataset(), train=True)
    return train, loader(stage.val_dataset(), train=False) if validate else None


def total_optimizer_steps(n_batches: int, accumulate: int, epochs: int) -> int:
    """Optimizer steps of ``epochs`` epochs: a step every ``accumulate`` batches and at epoch end."""
    return epochs * math.ceil(n_batches / accumulate)


def stage_settings(cfg: Config, stage_name: str):
    """``stages.<stage_name>`` (epochs, patience, optimizer overrides)."""
    return getattr(cfg.stages, stage_name)


def validation_on(cfg: Config) -> bool:
    return not cfg.training.skip_lightning_val


VALIDATION_OFF_MESSAGE = (
    "validation is off (training.skip_lightning_val=true): no val/nrmse monitor, no early "
    "stopping, only last.ckpt is written; gating is left to external evaluation."
)


# ------------------------------------------------------------------------------ EMA
class EMA:
    """Exponential moving average of the trainable parameters, updated after each optimizer step.

    shadow <- decay * shadow + (1 - decay) * param. Keys are the parameter names of the
    stage's module; checkpoints store them with the ``model.`` prefix under "ema_state_dict".
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def _params(self, model: nn.Module) -> dict[str, nn.Parameter]:
        return {n: p for n, p in model.named_parameters() if n in self.shadow}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for name, p in self._params(model).items():
            shadow = self.shadow[name]
            if shadow.device != p.device:
                self.shadow[name] = shadow = shadow.to(p.device)
            shadow.lerp_(p.detach(), 1.0 - self.decay)

    @contextmanager
    def applied(self, model: nn.Module):
        """Within the block the model holds the EMA weights; the trained ones come back after."""
        params = self._params(model)
        backup = {n: p.detach().clone() for n, p in params.items()}
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(self.shadow[n])
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(backup[n])

    def state_dict(self, prefix: str) -> dict[str, torch.Tensor]:
        return {prefix + n: t.detach().clone() for n, t in self.shadow.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor], prefix: str) -> None:
        for n in self.shadow:
            self.shadow[n] = state[prefix + n].to(self.shadow[n].device).clone()


@contextmanager
def maybe_ema(ema: EMA | None, model: nn.Module):
    if ema is None:
        yield
    else:
        with ema.applied(model):
            yield


# ------------------------------------------------------------------------------ metrics
class MetricMeans:
    """Averages per-sample metric values ``[B]`` over an epoch, per key.

    Sums stay on the device until ``totals`` (once per epoch), so adding costs no sync.
    """

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, metrics: dict[str, torch.Tensor]) -> None:
        for key, values in metrics.items():
            values = values.detach().reshape(-1).double()
            self.sums[key] = self.sums[key] + values.sum() if key in self.sums else values.sum()
            self.counts[key] = self.counts.get(key, 0) + values.numel()

    @classmethod
    def from_totals(cls, totals: dict[str, list]) -> MetricMeans:
        """A meter holding the sums and counts of ``totals`` (as ``progress_record`` stores them)."""
        meter = cls()
        for key, (total, count) in totals.items():
            meter.sums[key], meter.counts[key] = torch.tensor(float(total), dtype=torch.float64), int(count)
        return meter

    def totals(self) -> dict[str, tuple[float, int]]:
        return {k: (float(self.sums[k]), self.counts[k]) for k in self.sums}

    @staticmethod
    def merge(world: list[dict[str, tuple[float, int]]]) -> dict[str, tuple[float, int]]:
        """Several ranks' ``totals`` added key by key."""
        merged: dict[str, tuple[float, int]] = {}
        for totals in world:
            for key, (total, count) in totals.items():
                before = merged.get(key, (0.0, 0))
                merged[key] = (before[0] + total, before[1] + count)
        return merged

    def means(self, prefix: str, world: list[dict[str, tuple[float, int]]] | None = None) -> dict[str, float]:
        """``{"<prefix>/<key>": mean}`` over this process, or over every rank's ``totals`` in ``world``."""
        merged = self.merge(world if world is not None else [self.totals()])
        return {f"{prefix}/{k}": total / max(count, 1) for k, (total, count) in sorted(merged.items())}


def validation_means(values: dict[str, float]) -> dict[str, float]:
    """Checks that a validation epoch produced ``val/nrmse`` (every stage must report it)."""
    if MONITOR not in values:
        raise UPSError("the stage's validation_metrics returned no 'nrmse'; every stage must report it.")
    return values


def split_terms(terms: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A stage's ``training_loss`` output -> (scalars logged per step, per-sample metrics averaged
    per epoch)."""
    scalars = {k: v for k, v in terms.items() if v.dim() == 0}
    return scalars, {k: v for k, v in terms.items() if v.dim() > 0}


def train_log_values(terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``train/loss`` and ``train/<term>`` from the scalars of a stage's ``training_loss`` output."""
    return {f"train/{k}": v.detach() for k, v in terms.items()}


def check_finite_loss(scalars: dict[str, torch.Tensor], cfg: Config, step: int, skipped: int) -> bool:
    """True when the batch should be used; False to skip it (``nan_policy=skip_batch``). The
    message names the loss terms that are not finite."""
    if torch.isfinite(scalars["loss"]):
        return True
    bad = (
        ", ".join(
            f"{name} = {float(value)}"
            for name, value in scalars.items()
            if name != "loss" and not torch.isfinite(value)
        )
        or f"loss = {float(scalars['loss'])}"
    )
    return _non_finite(f"a non-finite training loss ({bad})", cfg, step, skipped)


def check_finite_gradients(
    parameters: list[tuple[str, torch.nn.Parameter]], cfg: Config, step: int, skipped: int
) -> bool:
    """Before an optimizer step: True when every gradient is finite. Otherwise (``skip_batch``)
    the gradients are dropped (set to None: the optimizer then leaves every parameter, its
    moments and its weight decay alone) and False is returned; ``stop`` raises."""
    grads = [p.grad for _, p in parameters if p.grad is not None]
    if not grads or torch.isfinite(torch.stack(torch._foreach_norm(grads))).all():
        return True
    names = [name for name, p in parameters if p.grad is not None and not torch.isfinite(p.grad).all()]
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    usable = _non_finite(f"non-finite gradients ({shown})", cfg, step, skipped)
    for _, p in parameters:
        p.grad = None
    return usable


def _non_finite(what: str, cfg: Config, step: int, skipped: int) -> bool:
    if cfg.training.nan_policy == "stop":
        raise UPSError(
            f"{what} at optimizer step {step}; the stage stops here (its last checkpoint is kept). Lower "
            f"optimizer.lr, set training.gradient_clip_val, or training.nan_policy=skip_batch."
        )
    if skipped + 1 > cfg.training.max_skipped_batches:
        raise UPSError(
            f"{what} at optimizer step {step}: more than training.max_skipped_batches="
            f"{cfg.training.max_skipped_batches} batches skipped; the run is diverging."
        )
    log.warning(
        "%s at optimizer step %d: batch skipped (%d of training.max_skipped_batches=%d)",
        what,
        step,
        skipped + 1,
        cfg.training.max_skipped_batches,
    )
    return False


# ------------------------------------------------------------------------------ devices
def training_device(cfg: Config) -> torch.device:
    """The device of a single-process run: the current GPU when the config uses one, else the CPU.
    (Under Lightning each rank uses its strategy's ``root_device``.)"""
    return torch.device("cuda") if uses_gpu(cfg) else torch.device("cpu")


def resolve_precision(cfg: Config) -> str:
    """``auto`` -> 32-true on CPU, bf16-mixed on GPU; anything else as given."""
    if cfg.training.precision != "auto":
        return cfg.training.precision
    return "bf16-mixed" if uses_gpu(cfg) else "32-true"


# ------------------------------------------------------------------------------ selection rules
@dataclass
class TopK:
    """ModelCheckpoint's top-k rule for mode="min": keep the k lowest scores; a new score
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
    """EarlyStopping's rule for mode="min", min_delta=0: an improvement is a strictly lower
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
