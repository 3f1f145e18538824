"""Stage ``autoencoder``: grid encoder + any-point decoder trained to reconstruct snapshots.

It learns every field of the config: the frames of time-dependent tasks and, for steady
tasks, the coefficient a(x) and the solution u(x) (field names ``<task>.a``, ``<task>.u``),
so the later stages (operator, steady prior) all work in one latent space. Training queries
the decoder at ``decoder.query_points`` random grid points per sample (drawn from the stage's
generator) and minimises the relative MSE there (``train/nrmse`` is the per-sample nRMSE at
those points, in normalised units); validation decodes every grid point and reports the
nRMSE in physical units. Fields with another number of spatial axes get their own encoder
and decoder (``by_rank``), fields with other channel counts their own stem and head; every
network maps into the same [L, D] latent space.
"""

from __future__ import annotations

import torch
from torch import nn

from ups.data.latent_pairs import SnapshotDataset, SteadyFieldDataset, TaskGroups, field_normalizers
from ups.errors import ConfigError, DataError
from ups.metrics import nrmse
from ups.models import FieldDecoder, FieldEncoder
from ups.models.encoder import field_amplitude
from ups.stages.base import Stage
from ups.stages.batch import denormalize, flat_points, per_task, relative_rmse, transpose_half


class Autoencoder(nn.Module):
    def __init__(self, encoder: FieldEncoder, decoder: FieldDecoder):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder


def channels_by_rank(tasks) -> dict[int, list[int]]:
    """{spatial axes: channel counts} of every field of ``tasks`` (a steady task's a and u have 1)."""
    out: dict[int, list[int]] = {}
    for task in tasks:
        channels = 1 if task.info.kind == "steady" else task.info.n_channels
        out.setdefault(len(task.info.spatial_shape), []).append(channels)
    return out


def build_autoencoder(cfg, tasks) -> Autoencoder:
    """The encoder/decoder pair for every field of ``tasks`` (all of ``data.tasks``, so every stage
    builds the same networks and loads the same checkpoint)."""
    ranks = channels_by_rank(tasks)
    amplitude = 2 * max(c for counts in ranks.values() for c in counts) if cfg.latent.amplitude else 0
    if amplitude >= cfg.latent.dim:
        raise ConfigError(
            f"latent.amplitude carries a mean and a log scale per channel of the widest task's fields "
            f"({amplitude // 2} channels) in {amplitude} of the latent.dim = {cfg.latent.dim} channels, "
            f"which leaves none for the shape; raise latent.dim or set latent.amplitude=false."
        )
    encoder = field_encoder(cfg, ranks, amplitude)
    decoder = FieldDecoder(
        cfg.latent.dim,
        ranks,
        hidden=cfg.decoder.hidden,
        depth=cfg.decoder.depth,
        fourier_features=cfg.decoder.fourier_features,
        amplitude=amplitude,
    )
    return Autoencoder(encoder, decoder)


def field_encoder(cfg, ranks: dict[int, list[int]], amplitude: int = 0) -> FieldEncoder:
    """A grid encoder of ``encoder.*``'s shape into ``latent.*``'s tokens, for fields of these
    ranks and channel counts."""
    return FieldEncoder(
        ranks,
        tokens=cfg.latent.tokens,
        dim=cfg.latent.dim,
        hidden=cfg.encoder.hidden,
        depth=cfg.encoder.depth,
        kernel_size=cfg.encoder.kernel_size,
        amplitude=amplitude,
    )


def forcing_encoder(cfg, tasks) -> FieldEncoder | None:
    """The operator's encoder of the tasks' static fields (``LatentOperator``'s ``forcing``), shaped
    as the autoencoder's encoder; None when no task has one."""
    ranks: dict[int, list[int]] = {}
    for task in tasks:
        if task.info.static_channels:
            ranks.setdefault(len(task.info.spatial_shape), []).append(len(task.info.static_channels))
    return field_encoder(cfg, ranks) if ranks else None


class AutoencoderStage(Stage):
    name = "autoencoder"

    def build(self) -> nn.Module:
        if not self.tasks:
            raise DataError("stage autoencoder needs at least one task in data.tasks.")
        self.normalizers = field_normalizers(self.tasks)
        self.transient_names = {t.name for t in self.tasks if t.info.kind == "transient"}
        self.transposed_names = {
            f"{t.name}.{f}" for t in self.tasks if t.transpose_symmetric for f in ("a", "u")
        }
        return build_autoencoder(self.cfg, self.tasks)

    def all_parameters_used_every_step(self) -> bool:
        return self.model.encoder.n_stems == 1

    def _fields(self, split: str) -> TaskGroups:
        """Snapshots of every transient task, then the coefficients and solutions of the steady ones."""
        transient = [t for t in self.tasks if t.info.kind == "transient"]
        steady = [t for t in self.tasks if t.info.kind == "steady"]
        return TaskGroups(
            [
                SnapshotDataset(transient, split),
                SteadyFieldDataset(steady, split, "a"),
                SteadyFieldDataset(steady, split, "u"),
            ]
        )

    def train_dataset(self):
        return self._fields("train")

    def val_dataset(self):
        return self._fields("val")

    def transient(self, batch: dict) -> bool:
        """Whether the batch holds frames of a time-dependent task (batches hold one task's fields);
        only those carry their amplitude in the latent (``latent.amplitude``)."""
        return batch["task_names"][0] in self.transient_names

    def training_loss(self, batch: dict) -> dict[str, torch.Tensor]:
        u, coords, transient = batch["u"], batch["coords"], self.transient(batch)
        if batch["task_names"][0] in self.transposed_names:  # the task is symmetric under x <-> y
            (u,) = transpose_half([u], self.generator)
        z = self.model.encoder(u, coords, amplitude=transient)
        points, values = flat_points(coords), flat_points(u)
        q = min(self.cfg.decoder.query_points, points.shape[1])
        pick = torch.rand(points.shape[:2], generator=self.generator).argsort(dim=1)[:, :q].to(u.device)

        def gather(x: torch.Tensor) -> torch.Tensor:
            return torch.gather(x, 1, pick[..., None].expand(-1, -1, x.shape[-1]))

        pred = self.model.decoder(z, gather(points), channels=u.shape[-1], amplitude=transient)
        target = gather(values)
        sq_err, energy = (pred - target).pow(2), target.pow(2)
        terms = {"mse": sq_err.mean()}
        if self.cfg.latent.amplitude and transient:  # relative to each sample's own scale: its shape's error
            mean, scale = field_amplitude(u)
            sq_err = sq_err / scale[:, None].pow(2)
            energy = ((target - mean[:, None]) / scale[:, None]).pow(2)
        # Relative to the batch's energy, not per sample: a nearly flat sample would otherwise dominate.
        terms["loss"] = sq_err.sum() / (energy.sum() + 1e-12)
        per_task(terms, "nrmse", relative_rmse(pred, target), batch["task_names"])
        return terms

    def validation_metrics(self, batch: dict) -> dict[str, torch.Tensor]:
        u, coords, names, transient = batch["u"], batch["coords"], batch["task_names"], self.transient(batch)
        z = self.model.encoder(u, coords, amplitude=transient)
        pred = self.model.decoder(z, flat_points(coords), channels=u.shape[-1], amplitude=transient)
        target = flat_points(u)
        # Metrics in float32 whatever the autocast precision, so bf16 rounding does not floor them.
        pred, target = pred.float(), target.float()
        values = nrmse(
            denormalize(self.normalizers, names, pred), denormalize(self.normalizers, names, target)
        )
        metrics: dict[str, torch.Tensor] = {}
        per_task(metrics, "nrmse", values, names)
        return metrics
