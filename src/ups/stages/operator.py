"""Stage ``operator``: the latent operator over latents of the frozen autoencoder.

Each item is a window of ``rollout_horizon + 1`` frames ``time_stride`` apart. Its latents
z_0..z_H come from the latent cache when ``training.latent_cache_dir`` is set (filled once
by ``prepare``), else the frozen encoder encodes the window's fields in the step. Loss terms:

- ``one_step``: MSE(op(z_0), z_1)
- ``rollout``:  mean over k of MSE(op^k(z_0), z_k), unrolled with gradients through every step
- ``spectral``: MSE of the token-axis Fourier amplitudes of op(z_0) and z_1
- ``decoded`` (when ``stages.operator.decoded_weight > 0``): MSE of the frozen decoder's field from
  op(z_0) against frame 1, in normalised units

``train/nrmse`` is the per-sample one-step error in latent space, ||op(z_0) - z_1|| / ||z_1||.
Validation decodes op(z_0) on the whole grid: ``nrmse`` (one step, physical units),
``rollout_nrmse`` (mean over the H unrolled steps) and ``persistence_nrmse`` (u_1 ≈ u_0 on the
same pairs, the floor every surrogate must beat), each also per task. With
``stages.operator.carry_error`` (the default) a prediction k steps from the known frame u_0 decodes as
D(z) + rho_k (u_0 - D(E(u_0))) (``decoder_for``, ``error_carry``), wherever operator predictions
are decoded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ups.checkpoint import load_upstream
from ups.data.latent_cache import LatentCache, LatentEntry, encoder_digest
from ups.data.latent_pairs import WindowDataset, field_normalizers, transient_tasks
from ups.data.tasks import param_names
from ups.metrics import nrmse
from ups.models import LatentOperator
from ups.models.blocks import token_grid
from ups.stages.autoencoder import build_autoencoder, forcing_encoder
from ups.stages.base import Stage
from ups.stages.batch import denormalize, flat_points, on_device, per_task, relative_rmse

# Frames per encoder call when filling the cache: bounds memory on large 2D grids.
_ENCODE_CHUNK = 32
# Training frames the operator's latent subspace is fitted on (all tasks together).
_SUBSPACE_FRAMES = 4096
# The subspace is dropped when it decodes validation frames more than this much worse than their
# full latents (1D latents lose under 1% at 64 directions; the 2D heat file's 3x: docs/benchmarks.md).
_SUBSPACE_TOLERANCE = 0.05
_SUBSPACE_CHECK_FRAMES = 256
# Train trajectories per task on which the autoencoder's error is followed over time (``error_carry``).
_CARRY_TRAJECTORIES = 8

log = logging.getLogger(__name__)


class OperatorModel(nn.Module):
    def __init__(self, autoencoder: nn.Module, operator: LatentOperator):
        super().__init__()
        self.encoder = autoencoder.encoder
        self.decoder = autoencoder.decoder
        self.operator = operator


class OperatorStage(Stage):
    name = "operator"
    upstream = ("autoencoder",)

    def build(self) -> nn.Module:
        autoencoder = build_autoencoder(self.cfg, self.tasks)
        load_upstream(autoencoder, self.upstream_checkpoints["autoencoder"], "autoencoder")
        autoencoder.requires_grad_(False)
        return self.operator_model(autoencoder)

    def operator_model(self, autoencoder: nn.Module) -> OperatorModel:
        """``autoencoder`` + a fresh operator for this config's time-dependent tasks."""
        cfg = self.cfg
        self.dyn_tasks = transient_tasks(self.tasks, self.name)
        self.normalizers = field_normalizers(self.dyn_tasks)
        self.latents: list[LatentEntry] | None = None
        self._carry: torch.Tensor | None = None
        operator = LatentOperator(
            cfg.latent.tokens,
            cfg.latent.dim,
            depth=cfg.stages.operator.depth,
            heads=cfg.stages.operator.heads,
            mlp_ratio=cfg.stages.operator.mlp_ratio,
            dropout=cfg.stages.operator.dropout,
            n_params=len(param_names(self.dyn_tasks)),
            n_tasks=len(self.dyn_tasks),
            subspace_dim=cfg.stages.operator.subspace_dim,
            locality=cfg.stages.operator.locality,
            task_grids=[token_grid(cfg.latent.tokens, len(t.info.spatial_shape)) for t in self.dyn_tasks],
            periodic=[t.periodic for t in self.dyn_tasks],
            forcing=forcing_encoder(cfg, self.dyn_tasks),
        )
        return OperatorModel(autoencoder, operator)

    def forcing(self, batch: dict) -> torch.Tensor | None:
        """The batch's forcing tokens (``LatentOperator.encode_forcing``), None without a static field."""
        return self.model.operator.encode_forcing(batch.get("static"), batch["coords"])

    def frozen_modules(self) -> list[nn.Module]:
        return [self.model.encoder, self.model.decoder]

    def all_parameters_used_every_step(self) -> bool:
        """False when the trained operator's forcing encoder sits out some batches: a task without a static
        field, or static fields of another rank or channel count (their own stems)."""
        forcing = self.model.operator.forcing
        if forcing is None or not any(p.requires_grad for p in forcing.parameters()):  # absent or frozen
            return True
        return forcing.n_stems == 1 and all(t.info.static_channels for t in self.dyn_tasks)

    # ---- data ---------------------------------------------------------------------
    def prepare(self, device: torch.device, *, progress: bool = False) -> None:
        """The latent cache (when on), then the operator's subspace (``stages.operator.subspace_dim``):
        fitted on training latents, kept only if it decodes validation frames within
        ``_SUBSPACE_TOLERANCE`` of their full latents (``subspace_cost``)."""
        self.prepare_latents(device, progress=progress)
        latent_operator = self.model.operator
        if latent_operator.subspace_dim:
            with on_device(
                [self.model.encoder, self.model.decoder, latent_operator], device
            ):  # encodes when no cache
                samples = self.subspace_samples(device)
                kept = latent_operator.fit_subspace(samples)
                cost = self.subspace_cost(device)
            if cost > 1 + _SUBSPACE_TOLERANCE:
                latent_operator.drop_subspace()
                log.warning(
                    "operator: the %d-dimensional latent subspace keeps %.5f of the training latents' "
                    "variance but its decoded validation error is %.2fx that of the full latents "
                    "(more than %.2fx): it is not used (stages.operator.subspace_dim=0 says so up front)",
                    latent_operator.subspace_dim,
                    kept,
                    cost,
                    1 + _SUBSPACE_TOLERANCE,
                )
            else:
                log.info(
                    "operator: the %d-dimensional latent subspace keeps %.5f of the training latents' "
                    "variance and its decoded validation error is %.3fx that of the full latents",
                    latent_operator.subspace_dim,
                    kept,
                    cost,
                )

    @torch.no_grad()
    def subspace_cost(self, device: torch.device) -> float:
        """Decoded nRMSE (normalised units) of up to ``_SUBSPACE_CHECK_FRAMES`` validation frames, spread over
        the tasks, their trajectories and frames, with their latents projected onto the fitted subspace,
        divided by the same with the full latents."""
        project = self.model.operator.project
        errors = {True: [], False: []}
        share = max(1, _SUBSPACE_CHECK_FRAMES // len(self.dyn_tasks))
        for k, task in enumerate(self.dyn_tasks):
            trajectories = np.asarray(task.split.indices("val"))
            picked = (
                trajectories[
                    np.unique(
                        np.linspace(0, len(trajectories) - 1, min(len(trajectories), 8)).round().astype(int)
                    )
                ]
                if len(trajectories)
                else []
            )
            points = torch.from_numpy(task.file.coordinates()).to(device)
            points = points.reshape(1, -1, points.shape[-1])
            frames = slice(0, None, max(1, -(-task.info.n_times * len(picked) // share)))
            for trajectory in list(picked):
                u = flat_points(
                    torch.from_numpy(task.normalizer.normalize(task.file.trajectory(int(trajectory), frames)))
                )
                z = torch.from_numpy(self._encode_trajectory(k, int(trajectory), device, frames)).to(device)
                for projected in (True, False):
                    decoded = (
                        self.model.decoder(
                            project(z) if projected else z,
                            points.expand(len(z), -1, -1),
                            channels=u.shape[-1],
                        )
                        .float()
                        .cpu()
                    )
                    errors[projected].append(nrmse(decoded, u.float()))
        if not errors[False]:
            return 1.0  # no validation frames: nothing to check against
        full = float(torch.cat(errors[False]).mean())
        return float(torch.cat(errors[True]).mean()) / max(full, 1e-12)

    def subspace_samples(self, device: torch.device) -> torch.Tensor:
        """Latents [N, L, D] of about ``_SUBSPACE_FRAMES`` frames of train trajectories, the same
        share from every task, spread evenly over its trajectories and frames."""
        share = max(1, _SUBSPACE_FRAMES // len(self.dyn_tasks))
        out = []
        for k, task in enumerate(self.dyn_tasks):
            trajectories = np.asarray(task.split.indices("train"))
            picked = np.unique(
                np.linspace(0, len(trajectories) - 1, min(len(trajectories), share)).round().astype(int)
            )
            if not len(picked):
                continue
            frames = slice(
                0, None, -(-task.info.n_times * len(picked) // share)
            )  # ceil: at most share in all
            for trajectory in trajectories[picked].tolist():
                latents = (
                    self.latents[k].frames(trajectory, frames)
                    if self.latents is not None
                    else self._encode_trajectory(k, trajectory, device, frames)
                )
                out.append(torch.from_numpy(latents))
        return torch.cat(out)

    def prepare_latents(self, device: torch.device, *, progress: bool = False) -> None:
        """Fill (or verify) the latent cache of every task when ``training.latent_cache_dir`` is set."""
        t = self.cfg.training
        if t.latent_cache_dir is None:
            return
        encoder = self.model.encoder
        with on_device([encoder], device):  # eval mode: the same as when it encodes in a step
            self.latents = LatentCache(t.latent_cache_dir).ensure(
                self.dyn_tasks,
                lambda k, i: self._encode_trajectory(k, i, device),
                encoder=encoder_digest(encoder),
                dtype=t.latent_cache_dtype,
                latent_shape=self.latent_shape,
                progress=progress,
            )

    @torch.no_grad()
    def _encode_trajectory(
        self, k: int, trajectory: int, device: torch.device, frames: slice = slice(None)
    ) -> np.ndarray:
        """Latents of the ``frames`` (default: all) of one trajectory of task k: float32 [F, L, D]."""
        task = self.dyn_tasks[k]
        frames = torch.from_numpy(task.normalizer.normalize(task.file.trajectory(trajectory, frames)))
        coords = torch.from_numpy(task.file.coordinates()).to(device)
        out = []
        for chunk in frames.split(_ENCODE_CHUNK):
            grid = coords.expand(chunk.shape[0], *coords.shape)
            out.append(self.model.encoder(chunk.to(device), grid).float().cpu())
        return torch.cat(out).numpy()

    def _windows(self, split: str, fields: bool) -> WindowDataset:
        horizon, stride = self.cfg.stages.operator.rollout_horizon, self.cfg.training.time_stride
        return WindowDataset(self.dyn_tasks, split, horizon, stride, latents=self.latents, fields=fields)

    def train_dataset(self):
        return self._windows("train", fields=self.cfg.stages.operator.decoded_weight > 0)

    def val_dataset(self):
        return self._windows("val", fields=True)  # the decoded metrics compare against the true fields

    # ---- computation --------------------------------------------------------------
    @torch.no_grad()
    def encode_window(self, batch: dict) -> torch.Tensor:
        """Latents of every frame of the window, [B, H+1, L, D]: from the cache or encoded now."""
        if "z" in batch:
            return batch["z"]
        window, coords = batch["window"], batch["coords"]
        b, h1 = window.shape[:2]
        frames = window.reshape(b * h1, *window.shape[2:])
        grid = coords.repeat_interleave(h1, dim=0)
        return self.model.encoder(frames, grid).reshape(b, h1, *self.latent_shape)

    @property
    def latent_shape(self) -> tuple[int, int]:
        return self.cfg.latent.tokens, self.cfg.latent.dim

    def rollout(self, batch: dict, z0: torch.Tensor, steps: int, correct=None) -> torch.Tensor:
        """The batch's latent rollout from ``z0`` [B, L, D]: [B, steps, L, D], with its forcing, and
        with ``correct`` (``LatentOperator.rollout``) the corrector's residual added at each step."""
        return self.model.operator.rollout(
            z0, batch["dt"], batch["params"], batch["task_id"], steps, self.forcing(batch), correct
        )

    def training_loss(self, batch: dict) -> dict[str, torch.Tensor]:
        w = self.cfg.stages.operator
        z = self.encode_window(batch)
        pred = self.rollout(batch, z[:, 0], z.shape[1] - 1)
        one_step = F.mse_loss(pred[:, 0], z[:, 1])
        rollout = F.mse_loss(pred, z[:, 1:])
        spectral = F.mse_loss(torch.fft.rfft(pred[:, 0], dim=1).abs(), torch.fft.rfft(z[:, 1], dim=1).abs())
        terms = {"one_step": one_step, "rollout": rollout, "spectral": spectral}
        loss = one_step + w.rollout_weight * rollout + w.spectral_weight * spectral
        if w.decoded_weight > 0:
            window, coords = batch["window"], flat_points(batch["coords"])
            decoded = self.model.decoder(pred[:, 0], coords, channels=window.shape[-1])
            terms["decoded"] = F.mse_loss(decoded, flat_points(window[:, 1]))
            loss = loss + w.decoded_weight * terms["decoded"]
        terms = {"loss": loss, **terms}
        per_task(terms, "nrmse", relative_rmse(pred[:, 0], z[:, 1]), batch["task_names"])
        return terms

    def validation_metrics(self, batch: dict) -> dict[str, torch.Tensor]:
        window, names = batch["window"], batch["task_names"]
        coords = flat_points(batch["coords"])
        z = self.encode_window(batch)
        steps = z.shape[1] - 1
        pred = self.rollout(batch, z[:, 0], steps)
        decode = self.decoder_for(batch, z[:, 0], flat_points(window[:, 0]), coords)
        truth = [
            denormalize(self.normalizers, names, flat_points(window[:, k]).float()) for k in range(steps + 1)
        ]
        decoded = [decode(pred[:, k], k + 1) for k in range(steps)]
        metrics: dict[str, torch.Tensor] = {}
        per_task(metrics, "nrmse", nrmse(decoded[0], truth[1]), names)
        rollout = torch.stack([nrmse(decoded[k], truth[k + 1]) for k in range(steps)]).mean(dim=0)
        per_task(metrics, "rollout_nrmse", rollout, names)
        per_task(metrics, "persistence_nrmse", nrmse(truth[0], truth[1]), names)
        return metrics

    def decoder_for(
        self, batch: dict, z0: torch.Tensor, u0: torch.Tensor, coords: torch.Tensor
    ) -> Callable[[torch.Tensor, int], torch.Tensor]:
        """decode(z, k): latents predicted k >= 1 steps after the known frame u0 [B, Q, C] (normalised,
        at ``coords`` [B, Q, d]; z0 its encoding) -> physical fields [B, Q, C] of the batch's tasks.

        With ``stages.operator.carry_error``: D(z) + rho_k (u0 - D(P(z0))), P the operator's subspace
        projection and rho_k [task, step, channel] from ``error_carry``; else D(z). An operator that
        has not moved the state (the untrained identity) then predicts u0 + (rho_k - 1)(u0 - D(P(z0))):
        persistence wherever the autoencoder's error persists."""
        names, channels = batch["task_names"], u0.shape[-1]
        error = None
        if self.cfg.stages.operator.carry_error:
            start = self.model.decoder(self.model.operator.project(z0), coords, channels=channels)
            error = u0.float() - start.float()
            carry = self.error_carry().to(u0.device)[batch["task_id"].to(u0.device)][
                ..., :channels
            ]  # [B, K+1, C]

        def decode(z: torch.Tensor, k: int) -> torch.Tensor:  # float32 whatever the autocast precision
            decoded = self.model.decoder(z, coords, channels=channels).float()
            if error is not None:
                decoded = decoded + carry[:, min(k, carry.shape[1] - 1), None] * error
            return denormalize(self.normalizers, names, decoded)

        return decode

    @torch.no_grad()
    def error_carry(self) -> torch.Tensor:
        """rho [n_tasks, K+1, C_max]: per task, step lag k (in units of ``training.time_stride``) and
        channel, the least-squares factor by which the autoencoder's error on a frame predicts its
        error k steps later, <e_t, e_t+k> / <e_t, e_t> over the frames and points of up to
        ``_CARRY_TRAJECTORIES`` train trajectories, clipped to [0, 1]; e_t = u_t - D(P(E(u_t))).
        It depends only on the frozen autoencoder, the subspace and the data, so it is measured the
        first time it is needed (validation or evaluation) and is the same in every engine."""
        if self._carry is None:
            self._carry = self._measure_error_carry()
        return self._carry

    def _measure_error_carry(self) -> torch.Tensor:
        stride, tasks = self.cfg.training.time_stride, self.dyn_tasks
        device = next(self.model.decoder.parameters()).device
        lags = max((t.info.n_times - 1) // stride for t in tasks) + 1
        carry = torch.zeros(len(tasks), lags, max(t.info.n_channels for t in tasks))
        for k, task in enumerate(tasks):
            trajectories = np.asarray(task.split.indices("train"))
            picked = np.unique(
                np.linspace(0, len(trajectories) - 1, min(len(trajectories), _CARRY_TRAJECTORIES))
                .round()
                .astype(int)
            )
            points = torch.from_numpy(task.file.coordinates()).to(device)
            points = points.reshape(1, -1, points.shape[-1])
            width = task.info.n_channels
            num, den = (
                torch.zeros(lags, width, dtype=torch.float64),
                torch.zeros(lags, width, dtype=torch.float64),
            )
            for trajectory in trajectories[picked].tolist():
                frames = slice(0, None, stride)
                u = flat_points(
                    torch.from_numpy(task.normalizer.normalize(task.file.trajectory(trajectory, frames)))
                )
                z = self.model.operator.project(
                    torch.from_numpy(self._encode_trajectory(k, trajectory, device, frames)).to(device)
                )
                decoded = torch.cat(
                    [
                        self.model.decoder(chunk, points.expand(len(chunk), -1, -1), channels=width)
                        for chunk in z.split(_ENCODE_CHUNK)
                    ]
                )
                e = (u.to(device).double() - decoded.double()).cpu()  # [F, Q, C]
                for lag in range(len(e)):
                    num[lag] += (e[: len(e) - lag] * e[lag:]).sum(dim=(0, 1))
                    den[lag] += e[: len(e) - lag].pow(2).sum(dim=(0, 1))
            carry[k, :, :width] = (num / den.clamp(min=1e-300)).clamp(0.0, 1.0).float()
        return carry

    def metadata(self) -> dict:
        """Adds the PDE parameter order and ``task_order``: the task embedding's rows, which a
        checkpoint must share with the config it is loaded under (``ups.checkpoint.check_fit``)."""
        return {
            **super().metadata(),
            "param_names": param_names(self.dyn_tasks),
            "task_order": [t.name for t in self.dyn_tasks],
        }
