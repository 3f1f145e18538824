"""A tiny Stage for engine and checkpoint tests: MLP regression on synthetic data, no files.

It borrows the ``autoencoder`` config section (epochs, patience, optimizer overrides), since
the schema only knows the real stage names. ``training_loss`` has a random-subset term drawn
from ``self.generator`` so that parity tests also check that generator state is handled alike.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.utils.data import Dataset

from ups.config import Config, with_keys
from ups.stages.base import Stage


class ToyData(Dataset):
    """``n`` samples {"x": [D], "y": [1]} of y = x . w + 0.1 noise, fixed by ``seed``."""

    def __init__(self, n: int, dim: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(dim, 1, generator=torch.Generator().manual_seed(1234))
        self.x = torch.randn(n, dim, generator=g)
        self.y = self.x @ w + 0.1 * torch.randn(n, 1, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i]}


class ToyStage(Stage):
    name = "autoencoder"
    dim = 6
    n_train = 40  # 5 batches of 8: an odd count, so accumulation steps at epoch end too
    n_val = 12
    collate = None  # plain tensors, no task names

    def __init__(self, cfg: Config, hidden: int = 16):
        self.hidden = hidden
        super().__init__(cfg, tasks=[])

    def build(self) -> nn.Module:
        return nn.Sequential(nn.Linear(self.dim, self.hidden), nn.Tanh(), nn.Linear(self.hidden, 1))

    def train_dataset(self):
        return ToyData(self.n_train, self.dim, seed=1)

    def val_dataset(self):
        return ToyData(self.n_val, self.dim, seed=2)

    def training_loss(self, batch: dict) -> dict[str, torch.Tensor]:
        err = (self.model(batch["x"]) - batch["y"]).pow(2).squeeze(-1)
        subset = torch.rand(err.shape[0], generator=self.generator).argsort()[: max(1, err.shape[0] // 2)]
        mse, subset_mse = err.mean(), err[subset.to(err.device)].mean()
        return {"loss": mse + 0.5 * subset_mse, "mse": mse, "subset_mse": subset_mse}

    def validation_metrics(self, batch: dict) -> dict[str, torch.Tensor]:
        err = (self.model(batch["x"]) - batch["y"]).abs().squeeze(-1)
        values = err / batch["y"].abs().mean().clamp_min(1e-6)
        return {"nrmse": values, "toy/nrmse": values}

    def metadata(self) -> dict:
        return {"tasks": [], "toy": {"hidden": self.hidden}}


class PlateauStage(ToyStage):
    """Validation nRMSE is constant, so early stopping must trigger after ``patience`` epochs."""

    def validation_metrics(self, batch: dict) -> dict[str, torch.Tensor]:
        metrics = super().validation_metrics(batch)
        metrics["nrmse"] = torch.ones_like(metrics["nrmse"])
        return metrics


def toy_config(**training) -> Config:
    """Defaults with small batches, 2 autoencoder epochs, and ``training`` overrides."""
    cfg = with_keys(
        Config(),
        {"seed": 3, "stages.autoencoder.epochs": 2, "stages.autoencoder.patience": 2, "optimizer.lr": 1e-2},
    )
    return dataclasses.replace(
        cfg,
        training=dataclasses.replace(
            cfg.training, batch_size=8, accelerator="cpu", log_every_n_steps=1, **training
        ),
    )


class _NanGradient(torch.autograd.Function):
    """The identity forward; NaN gradients backward."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


class FaultyStage(ToyStage):
    """The training losses of calls listed in ``nan_loss`` have a NaN ``subset_mse`` term; those in
    ``nan_gradient`` a finite loss whose gradients are NaN (calls count from 0, one per batch)."""

    def __init__(self, cfg: Config, nan_loss=(), nan_gradient=()):
        super().__init__(cfg)
        self.nan_loss, self.nan_gradient, self.calls = set(nan_loss), set(nan_gradient), 0

    def training_loss(self, batch: dict) -> dict[str, torch.Tensor]:
        terms, call = super().training_loss(batch), self.calls
        self.calls += 1
        if call in self.nan_loss:
            terms["subset_mse"] = terms["subset_mse"] * float("nan")
            terms["loss"] = terms["mse"] + 0.5 * terms["subset_mse"]
        if call in self.nan_gradient:
            terms["loss"] = _NanGradient.apply(terms["loss"])
        return terms
