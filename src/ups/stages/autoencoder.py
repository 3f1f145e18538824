"""Stage ``autoencoder``: grid encoder + any-point decoder trained to reconstruct snapshots.

Training queries the decoder at ``decoder.query_points`` random grid points per sample (drawn
from the stage's generator) and minimises the relative MSE there; validation decodes every
grid point and reports the nRMSE in physical units.
"""

from __future__ import annotations

import torch
from torch import nn

from ups.eval.metrics import nrmse
from ups.models import AnyPointDecoder, GridEncoder
from ups.stages.base import Stage
from ups.stages.data import SnapshotDataset, transient_tasks


class Autoencoder(nn.Module):
    def __init__(self, encoder: GridEncoder, decoder: AnyPointDecoder):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder


def build_autoencoder(cfg, tasks) -> Autoencoder:
    """The encoder/decoder pair for the (transient) tasks' grid rank and channels."""
    info = tasks[0].info
    dims, channels = len(info.spatial_shape), info.n_channels
    encoder = GridEncoder(channels, dims, tokens=cfg.latent.tokens, dim=cfg.latent.dim, hidden=cfg.encoder.hidden,
                          depth=cfg.encoder.depth, kernel_size=cfg.encoder.kernel_size)
    decoder = AnyPointDecoder(cfg.latent.dim, dims, channels, hidden=cfg.decoder.hidden, depth=cfg.decoder.depth,
                              fourier_features=cfg.decoder.fourier_features)
    return Autoencoder(encoder, decoder)


def flat_points(field: torch.Tensor) -> torch.Tensor:
    """[B, *S, C] -> [B, Q, C] with Q = prod(S)."""
    return field.reshape(field.shape[0], -1, field.shape[-1])


def denormalize(tasks, task_id: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Normalised values [B, ..., C] of samples from tasks ``task_id`` [B] -> physical units."""
    out = torch.empty_like(values)
    for k in task_id.unique().tolist():
        rows = task_id == k
        out[rows] = tasks[k].normalizer.denormalize(values[rows])
    return out


def per_task(metrics: dict, name: str, values: torch.Tensor, tasks, task_id: torch.Tensor) -> None:
    """Adds ``name`` [B] and ``<task>/<name>`` for each task present in the batch."""
    metrics[name] = values
    for k in task_id.unique().tolist():
        metrics[f"{tasks[k].name}/{name}"] = values[task_id == k]


class AutoencoderStage(Stage):
    name = "autoencoder"

    def build(self) -> nn.Module:
        self.dyn_tasks = transient_tasks(self.tasks, self.name)
        return build_autoencoder(self.cfg, self.dyn_tasks)

    def train_dataset(self):
        return SnapshotDataset(self.dyn_tasks, "train")

    def val_dataset(self):
        return SnapshotDataset(self.dyn_tasks, "val")

    def training_loss(self, batch: dict) -> dict[str, torch.Tensor]:
        u, coords = batch["u"], batch["coords"]
        z = self.model.encoder(u, coords)
        points, values = flat_points(coords), flat_points(u)
        q = min(self.cfg.decoder.query_points, points.shape[1])
        pick = torch.rand(points.shape[:2], generator=self.generator).argsort(dim=1)[:, :q].to(u.device)
        gather = lambda x: torch.gather(x, 1, pick[..., None].expand(-1, -1, x.shape[-1]))
        pred = self.model.decoder(z, gather(points))
        target = gather(values)
        # Relative to the batch's energy, not per sample: a nearly flat sample would otherwise dominate.
        sq_err = (pred - target).pow(2)
        return {"loss": sq_err.sum() / (target.pow(2).sum() + 1e-12), "mse": sq_err.mean()}

    def validation_metrics(self, batch: dict) -> dict[str, torch.Tensor]:
        u, coords, task_id = batch["u"], batch["coords"], batch["task_id"]
        z = self.model.encoder(u, coords)
        pred = self.model.decoder(z, flat_points(coords))
        target = flat_points(u)
        # Metrics in float32 whatever the autocast precision, so bf16 rounding does not floor them.
        pred, target = pred.float(), target.float()
        values = nrmse(denormalize(self.dyn_tasks, task_id, pred), denormalize(self.dyn_tasks, task_id, target))
        metrics: dict[str, torch.Tensor] = {}
        per_task(metrics, "nrmse", values, self.dyn_tasks, task_id)
        return metrics
