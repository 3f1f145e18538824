"""``training.nan_policy``: what both engines do with a non-finite training loss or gradient
(stop, or skip the batch up to ``training.max_skipped_batches``)."""

from __future__ import annotations

import logging

import torch

from ups.config import Config
from ups.errors import UPSError

log = logging.getLogger("ups")


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
