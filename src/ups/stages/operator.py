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
D(z) + rho_k (u_0 - D(E(u_0))) (``LatentDynamics.decoder_for``, ``error_carry``), wherever operator
predictions are decoded.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from ups.metrics import nrmse
from ups.stages.batch import flat_points, on_device, per_task, relative_rmse
from ups.stages.dynamics import LatentStage, spread

# Training frames the operator's latent subspace is fitted on (all tasks together).
_SUBSPACE_FRAMES = 4096
# The subspace is dropped when it decodes validation frames more than this much worse than their
# full latents (1D latents lose under 1% at 64 directions; the 2D heat file's 3x: docs/benchmarks.md).
_SUBSPACE_TOLERANCE = 0.05
_SUBSPACE_CHECK_FRAMES = 256

log = logging.getLogger(__name__)


class OperatorStage(LatentStage):
    name = "operator"
    upstream = ("autoencoder",)

    def all_parameters_used_every_step(self) -> bool:
        """False when the trained operator's forcing encoder sits out some batches: a task without a static
        field, or static fields of another rank or channel count (their own stems)."""
        forcing = self.model.operator.forcing
        if forcing is None or not any(p.requires_grad for p in forcing.parameters()):  # absent or frozen
            return True
        return forcing.n_stems == 1 and all(t.info.static_channels for t in self.dynamics.tasks)

    # ---- data ---------------------------------------------------------------------
    def prepare(self, device: torch.device, *, progress: bool = False) -> None:
        """The latent cache (when on), then the operator's subspace (``stages.operator.subspace_dim``):
        fitted on training latents, kept only if it decodes validation frames within
        ``_SUBSPACE_TOLERANCE`` of their full latents (``subspace_cost``)."""
        self.dynamics.prepare_latents(device, progress=progress)
        latent_operator = self.model.operator
        if not latent_operator.subspace_dim:
            return
        with on_device(
            [self.model.encoder, self.model.decoder, latent_operator], device
        ):  # encodes when no cache
            kept = latent_operator.fit_subspace(self.subspace_samples(device))
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
        dynamics, project = self.dynamics, self.model.operator.project
        errors = {True: [], False: []}
        share = max(1, _SUBSPACE_CHECK_FRAMES // len(dynamics.tasks))
        for k, task in enumerate(dynamics.tasks):
            picked, points = spread(task.split.indices("val"), 8), dynamics.points(k, device)
            frames = slice(0, None, max(1, -(-task.info.n_times * len(picked) // share)))
            for trajectory in picked:
                u = dynamics.fields(k, trajectory, frames)
                z = torch.from_numpy(dynamics.encode_trajectory(k, trajectory, device, frames)).to(device)
                for projected in (True, False):
                    latents = project(z) if projected else z
                    grid = points.expand(len(z), -1, -1)
                    decoded = self.model.decoder(latents, grid, channels=u.shape[-1]).float().cpu()
                    errors[projected].append(nrmse(decoded, u.float()))
        if not errors[False]:
            return 1.0  # no validation frames: nothing to check against
        full = float(torch.cat(errors[False]).mean())
        return float(torch.cat(errors[True]).mean()) / max(full, 1e-12)

    def subspace_samples(self, device: torch.device) -> torch.Tensor:
        """Latents [N, L, D] of about ``_SUBSPACE_FRAMES`` frames of train trajectories, the same
        share from every task, spread evenly over its trajectories and frames."""
        dynamics = self.dynamics
        share = max(1, _SUBSPACE_FRAMES // len(dynamics.tasks))
        out = []
        for k, task in enumerate(dynamics.tasks):
            picked = spread(task.split.indices("train"), share)
            if not picked:
                continue
            frames = slice(
                0, None, -(-task.info.n_times * len(picked) // share)
            )  # ceil: at most share in all
            for trajectory in picked:
                latents = (
                    dynamics.latents[k].frames(trajectory, frames)
                    if dynamics.latents is not None
                    else dynamics.encode_trajectory(k, trajectory, device, frames)
                )
                out.append(torch.from_numpy(latents))
        return torch.cat(out)

    # ---- computation --------------------------------------------------------------
    def training_loss(self, batch: dict) -> dict[str, torch.Tensor]:
        w, dynamics = self.cfg.stages.operator, self.dynamics
        z = dynamics.encode_window(batch)
        pred = dynamics.rollout(batch, z[:, 0], z.shape[1] - 1)
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
        dynamics, names = self.dynamics, batch["task_names"]
        z = dynamics.encode_window(batch)
        steps = z.shape[1] - 1
        pred = dynamics.rollout(batch, z[:, 0], steps)
        decode, truth = dynamics.decoding(batch, z[:, 0])
        decoded = [decode(pred[:, k], k + 1) for k in range(steps)]
        metrics: dict[str, torch.Tensor] = {}
        per_task(metrics, "nrmse", nrmse(decoded[0], truth(1)), names)
        rollout = torch.stack([nrmse(decoded[k], truth(k + 1)) for k in range(steps)]).mean(dim=0)
        per_task(metrics, "rollout_nrmse", rollout, names)
        per_task(metrics, "persistence_nrmse", nrmse(truth(0), truth(1)), names)
        return metrics
