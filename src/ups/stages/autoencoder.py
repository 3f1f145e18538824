"""Stage ``autoencoder``: grid encoder + any-point decoder trained to reconstruct snapshots.

Training queries the decoder at ``decoder.query_points`` random grid points per sample (drawn
from the stage's generator) and minimises the relative MSE there (``train/nrmse`` is the
per-sample nRMSE at those points, in normalised units); validation decodes every grid point
and reports the nRMSE in physical units. Tasks with different channel counts get their own
encoder stem and decoder head; everything else is shared.
"""

from __future__ import annotations

import torch
from torch import nn

from ups.data.latent_pairs import SnapshotDataset, transient_tasks
from ups.eval.metrics import nrmse
from ups.models import AnyPointDecoder, GridEncoder
from ups.stages.base import Stage
from ups.stages.batch import denormalize, flat_points, per_task, relative_rmse


class Autoencoder(nn.Module):
    def __init__(self, encoder: GridEncoder, decoder: AnyPointDecoder):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder


def build_autoencoder(cfg, tasks) -> Autoencoder:
    """The encoder/decoder pair for the (transient) tasks' grid rank and channel counts."""
    dims, channels = len(tasks[0].info.spatial_shape), [t.info.n_channels for t in tasks]
    encoder = GridEncoder(channels, dims, tokens=cfg.latent.tokens, dim=cfg.latent.dim, hidden=cfg.encoder.hidden,
                          depth=cfg.encoder.depth, kernel_size=cfg.encoder.kernel_size)
    decoder = AnyPointDecoder(cfg.latent.dim, dims, channels, hidden=cfg.decoder.hidden, depth=cfg.decoder.depth,
                              fourier_features=cfg.decoder.fourier_features)
    return Autoencoder(encoder, decoder)


class AutoencoderStage(Stage):
    name = "autoencoder"

    def build(self) -> nn.Module:
        self.dyn_tasks = transient_tasks(self.tasks, self.name)
        self.by_name = {t.name: t for t in self.dyn_tasks}
        return build_autoencoder(self.cfg, self.dyn_tasks)

    def all_parameters_used_every_step(self) -> bool:
        return len(self.model.encoder.in_channels) == 1

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

        def gather(x: torch.Tensor) -> torch.Tensor:
            return torch.gather(x, 1, pick[..., None].expand(-1, -1, x.shape[-1]))

        pred = self.model.decoder(z, gather(points), channels=u.shape[-1])
        target = gather(values)
        # Relative to the batch's energy, not per sample: a nearly flat sample would otherwise dominate.
        sq_err = (pred - target).pow(2)
        terms = {"loss": sq_err.sum() / (target.pow(2).sum() + 1e-12), "mse": sq_err.mean()}
        per_task(terms, "nrmse", relative_rmse(pred, target), batch["task_names"])
        return terms

    def validation_metrics(self, batch: dict) -> dict[str, torch.Tensor]:
        u, coords, names = batch["u"], batch["coords"], batch["task_names"]
        z = self.model.encoder(u, coords)
        pred = self.model.decoder(z, flat_points(coords), channels=u.shape[-1])
        target = flat_points(u)
        # Metrics in float32 whatever the autocast precision, so bf16 rounding does not floor them.
        pred, target = pred.float(), target.float()
        values = nrmse(denormalize(self.by_name, names, pred), denormalize(self.by_name, names, target))
        metrics: dict[str, torch.Tensor] = {}
        per_task(metrics, "nrmse", values, names)
        return metrics
