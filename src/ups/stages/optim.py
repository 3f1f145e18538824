"""Optimizer and learning-rate schedule of a stage: the global ``optimizer`` section with the
stage's ``stages.<name>.optimizer`` overrides on top."""

from __future__ import annotations

import math

import torch

from ups.config import Config


def resolved_optimizer(cfg: Config, stage: str) -> dict:
    """The optimizer settings of ``stage``: global values, then the stage's overrides."""
    settings = {
        "name": cfg.optimizer.name, "lr": cfg.optimizer.lr, "weight_decay": cfg.optimizer.weight_decay,
        "scheduler": cfg.optimizer.scheduler, "warmup_steps": cfg.optimizer.warmup_steps,
    }
    override = getattr(cfg.stages, stage).optimizer
    settings.update({k: v for k, v in vars(override).items() if v is not None})
    return settings


def build_optimizer(cfg: Config, stage: str, params, total_steps: int):
    """(optimizer, LambdaLR stepped once per optimizer step, or None for a constant rate)."""
    s = resolved_optimizer(cfg, stage)
    params = list(params)
    if s["name"] == "adamw":
        opt = torch.optim.AdamW(params, lr=s["lr"], weight_decay=s["weight_decay"], betas=tuple(cfg.optimizer.betas))
    elif s["name"] == "adam":
        opt = torch.optim.Adam(params, lr=s["lr"], weight_decay=s["weight_decay"], betas=tuple(cfg.optimizer.betas))
    else:
        opt = torch.optim.SGD(params, lr=s["lr"], weight_decay=s["weight_decay"], momentum=0.9)
    if s["scheduler"] == "none" and s["warmup_steps"] == 0:
        return opt, None
    factor = lr_factor(s["scheduler"], s["warmup_steps"], max(total_steps, 1))
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def lr_factor(kind: str, warmup: int, total: int):
    """The multiplier of the base rate at optimizer step ``step`` (0-based)."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if kind == "step":
            return 0.1 ** math.floor(3 * progress)
        return 1.0

    return factor
