"""Stage ``diff_residual``: a flow-matching corrector of the frozen operator's one-step residual.

The operator's prediction op(z_t) misses r = z_{t+1} - op(z_t). A conditional flow (noise ->
r / sigma, sigma the residual's RMS over the train windows, stored as the buffer
``residual_scale``) is learned with the velocity network ``FlowNet`` conditioned per token on
op(z_t) and globally on dt, task and PDE parameters. Loss (rectified flow matching):
MSE(v(x_s, s), r/sigma - noise) at x_s = (1 - s) noise + s r/sigma, s ~ U(0, 1);
``train/nrmse`` is ||v - target|| / ||target|| per sample.

The operator, encoder and decoder are frozen teachers from the operator's best checkpoint
(which holds the autoencoder it was trained on; EMA weights when kept). Sampling integrates
the flow with ``stages.diff_residual.steps_infer`` steps of ``stages.diff_residual.sampler`` (euler or heun).

Validation, decoded on the whole grid in physical units (noise seeded per batch, so both
engines and every epoch draw the same):
- ``nrmse``: one step of op + one sampled correction; ``operator_nrmse``: op alone, same pairs;
- ``ensemble_nrmse``: the mean of ``stages.diff_residual.val_samples`` corrected predictions;
- ``crps`` and ``spread_skill`` of that ensemble;
- ``rollout_nrmse`` / ``operator_rollout_nrmse``: mean over the rollout horizon, corrected at
  every step (one sample) / operator alone.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ups.metrics import crps, nrmse, spread_skill
from ups.models.flow import flow_matching_pair
from ups.stages.batch import batches_of, evenly_spaced, on_device, per_task, relative_rmse
from ups.stages.dynamics import LatentStage

# Train windows used to measure the residual's scale (shared evenly by the tasks).
_SCALE_WINDOWS = 2048


class DiffResidualStage(LatentStage):
    name = "diff_residual"
    upstream = ("operator",)

    def prepare(self, device: torch.device, *, progress: bool = False) -> None:
        """The latent cache (when on), then ``residual_scale``: the residual's RMS over up to
        2048 train windows, spread evenly over each task and encoded one task at a time."""
        dynamics = self.dynamics
        dynamics.prepare_latents(device, progress=progress)
        windows = dynamics.windows("train", fields=dynamics.latents is None)
        share = max(1, _SCALE_WINDOWS // len(windows.task_sizes))
        total, count = 0.0, 0
        with torch.no_grad(), on_device(self.frozen_modules(), device):
            for start, size in zip(np.cumsum([0] + windows.task_sizes[:-1]).tolist(), windows.task_sizes):
                picks = [start + i for i in evenly_spaced(size, share)]
                for batch in batches_of(windows, picks, self.collate, 256, device):
                    residual = dynamics.residual(batch)[1]
                    total, count = total + float(residual.double().pow(2).sum()), count + residual.numel()
        self.model.residual_scale.fill_(max((total / max(count, 1)) ** 0.5, 1e-8))

    def training_loss(self, batch: dict) -> dict[str, torch.Tensor]:
        dynamics = self.dynamics
        _, residual, pred = dynamics.residual(batch)
        x_s, s, target, _ = flow_matching_pair(residual / self.model.residual_scale, self.generator)
        v = dynamics.velocity(batch, pred, self.model.flow)(x_s, s)
        terms = {"loss": F.mse_loss(v, target)}
        per_task(terms, "nrmse", relative_rmse(v, target), batch["task_names"])
        return terms

    @torch.no_grad()
    def validation_metrics(self, batch: dict) -> dict[str, torch.Tensor]:
        dynamics = self.dynamics
        generator = dynamics.validation_generator(batch)
        z, _, pred = dynamics.residual(batch)
        corrected = [
            pred + dynamics.correction(batch, pred, generator)
            for _ in range(self.cfg.stages.diff_residual.val_samples)
        ]
        decode, truth = dynamics.decoding(batch, z[:, 0])
        samples = torch.stack([decode(c, 1) for c in corrected])
        names = batch["task_names"]
        metrics: dict[str, torch.Tensor] = {}
        per_task(metrics, "nrmse", nrmse(samples[0], truth(1)), names)
        per_task(metrics, "operator_nrmse", nrmse(decode(pred, 1), truth(1)), names)
        per_task(metrics, "ensemble_nrmse", nrmse(samples.mean(dim=0), truth(1)), names)
        per_task(metrics, "crps", crps(samples, truth(1)), names)
        if len(samples) > 1:
            per_task(metrics, "spread_skill", spread_skill(samples, truth(1)), names)
        steps = batch["window"].shape[1] - 1
        rollouts = {
            "rollout_nrmse": dynamics.rollout(batch, z[:, 0], steps, generator),
            "operator_rollout_nrmse": dynamics.rollout(batch, z[:, 0], steps),
        }
        for key, states in rollouts.items():
            errors = [nrmse(decode(states[:, k], k + 1), truth(k + 1)) for k in range(steps)]
            per_task(metrics, key, torch.stack(errors).mean(0), names)
        return metrics
