"""What both engines read from the resolved config for a stage: its settings, batch size and
EMA decay (the stage's own, else ``training``'s), whether it validates, its optimizer-step
budget, and the device and precision it trains with."""

from __future__ import annotations

import math

import torch

from ups.config import Config
from ups.config.engines import uses_gpu


def stage_settings(cfg: Config, stage_name: str):
    """``stages.<stage_name>`` (epochs, patience, optimizer overrides)."""
    return getattr(cfg.stages, stage_name)


def batch_size(cfg: Config, stage_name: str) -> int:
    """``stages.<stage>.batch_size``, else ``training.batch_size``."""
    own = stage_settings(cfg, stage_name).batch_size
    return own if own is not None else cfg.training.batch_size


def ema_decay(cfg: Config, stage_name: str) -> float | None:
    """``stages.<stage>.ema_decay``, else ``training.ema_decay`` (None: no EMA)."""
    own = stage_settings(cfg, stage_name).ema_decay
    return own if own is not None else cfg.training.ema_decay


def total_optimizer_steps(n_batches: int, accumulate: int, epochs: int) -> int:
    """Optimizer steps of ``epochs`` epochs: a step every ``accumulate`` batches and at epoch end."""
    return epochs * math.ceil(n_batches / accumulate)


def validation_on(cfg: Config) -> bool:
    return not cfg.training.skip_lightning_val


VALIDATION_OFF_MESSAGE = (
    "validation is off (training.skip_lightning_val=true): no val/nrmse monitor, no early "
    "stopping, only last.ckpt is written; gating is left to external evaluation."
)


def training_device(cfg: Config) -> torch.device:
    """The device of a single-process run: the current GPU when the config uses one, else the CPU.
    (Under Lightning each rank uses its strategy's ``root_device``.)"""
    return torch.device("cuda") if uses_gpu(cfg) else torch.device("cpu")


def resolve_precision(cfg: Config) -> str:
    """``auto`` -> 32-true on CPU, bf16-mixed on GPU; anything else as given."""
    if cfg.training.precision != "auto":
        return cfg.training.precision
    return "bf16-mixed" if uses_gpu(cfg) else "32-true"
