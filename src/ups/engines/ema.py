"""Exponential moving average of a stage's trainable weights (``training.ema_decay`` or the
stage's own), as both engines keep it: updated after each optimizer step, applied while validating."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


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
